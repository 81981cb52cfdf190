import torch

from lt_kit.data.loaders import TensorLoader


def make(n=40, **kw):
    imgs = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    labels = torch.arange(n)
    args = dict(batch_size=8, mean=(0.0,) * 3, std=(1 / 255,) * 3, train=True, pad=2, seed=5)
    return imgs, labels, TensorLoader(imgs, labels, **{**args, **kw})


def test_train_batches_are_crops_and_flips_of_the_source():
    imgs, labels, ld = make()
    ld.set_epoch(1)
    for x, y in ld:
        for img, lbl in zip(x, y):
            src = torch.nn.functional.pad(imgs[lbl].float(), (2, 2, 2, 2))
            windows = [src[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
            assert any(torch.equal(img, w) or torch.equal(img, w.flip(2)) for w in windows)


def test_epochs_are_seeded_and_differ():
    _, _, ld = make()
    ld.set_epoch(1)
    a = [x for x, _ in ld]
    b = [x for x, _ in ld]
    ld.set_epoch(2)
    c = [x for x, _ in ld]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_drop_last_and_eval_order():
    imgs, labels, ld = make(n=43)
    assert len(ld) == 5 and sum(len(y) for _, y in ld) == 40
    ev = TensorLoader(imgs, labels, batch_size=8, mean=(0.0,) * 3, std=(1 / 255,) * 3, train=False)
    assert len(ev) == 6 and torch.equal(torch.cat([y for _, y in ev]), labels)
    assert torch.equal(torch.cat([x for x, _ in ev]), imgs.float())


def test_ranks_split_the_same_global_batch():
    _, _, one = make()
    _, _, r0 = make(rank=0, world_size=2)
    _, _, r1 = make(rank=1, world_size=2)
    for (x, y), (x0, y0), (x1, y1) in zip(one, r0, r1):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_channels_last_output():
    _, _, ld = make(channels_last=True)
    x, _ = next(iter(ld))
    assert x.is_contiguous(memory_format=torch.channels_last)
