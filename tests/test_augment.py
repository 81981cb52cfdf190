"""The modern recipe's switches (augment.py): shapes, value ranges, seeds, per-image equality with torchvision's
own operations, mixing weights, the reference stream untouched, and the switches end to end in ``fit``."""
import pytest
import torch

from lt_kit.config import resolve
from lt_kit.data.augment import Mixer, PolicyAugment, cutout_
from lt_kit.data.loaders import TensorLoader
from lt_kit.errors import LtKitError


def _images(n=24, c=3, s=16, seed=0):
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["autoaugment", "randaugment"])
def test_policy_is_per_image_torchvision(kind):
    """Grouped batched application == applying each image's drawn op with torchvision one image at a time."""
    pol = PolicyAugment(kind)
    x = _images()
    rounds = pol.draw(len(x), torch.Generator().manual_seed(3), 16, 16)
    out = pol.apply(x.clone(), rounds)
    assert out.shape == x.shape and out.dtype == torch.uint8
    ref = x.clone()
    for r in rounds:
        for i, d in enumerate(r):
            if d is not None:
                ref[i] = pol.tv._apply_image_or_video_transform(ref[i:i + 1], d[0], d[1], interpolation=pol.tv.interpolation,
                                                                fill=pol.tv._fill)[0]
    assert torch.equal(out, ref)
    ops = {d[0] for r in rounds for d in r if d is not None}
    assert len(ops) >= 5, "each image draws its own operation, not one for the whole batch"
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kind", ["autoaugment", "randaugment"])
def test_policy_seed_reproduces_and_rank_slices(kind):
    pol, x = PolicyAugment(kind), _images()
    a = pol(x.clone(), torch.Generator().manual_seed(5))
    b = pol(x.clone(), torch.Generator().manual_seed(5))
    c = pol(x.clone(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a rank's rows of the global batch get exactly the global run's draws
    half = pol(x[12:].clone(), torch.Generator().manual_seed(5), b=24, keep=slice(12, 24))
    assert torch.equal(half, a[12:])


def test_randaugment_magnitude_checked():
    with pytest.raises(ValueError, match="magnitude"):
        PolicyAugment("randaugment", magnitude=31)


def test_cutout_square_black_and_clipped():
    x = torch.full((64, 3, 16, 16), 200, dtype=torch.uint8)
    out = cutout_(x.clone(), 6, torch.Generator().manual_seed(0))
    holes = (out == 0).all(1)                                     # (B, H, W): all channels black
    assert torch.equal((out == 0).any(1), holes) and out.max() == 200
    area = holes.flatten(1).sum(1)
    assert area.max() == 36 and area.min() >= 9                   # 6x6 inside; clipped at least to a 3x3 corner
    for h in holes:                                               # one axis-aligned rectangle per image
        ys, xs = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert h.sum() == len(ys) * len(xs) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    again = cutout_(x.clone(), 6, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize("mixup,cutmix", [(1.0, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixer_weights_sum_to_one(mixup, cutmix):
    m = Mixer(mixup, cutmix, seed=1)
    m.set_epoch(2)
    x = torch.randn(32, 3, 16, 16)
    y = torch.arange(32) % 10
    kinds = set()
    for _ in range(20):
        xm, mix = m.mix(x, y)
        kinds.add(mix.kind)
        assert xm.shape == x.shape and 0 <= mix.lam <= 1
        assert xm.min() >= x.min() - 1e-5 and xm.max() <= x.max() + 1e-5     # a convex mix stays in range
        assert mix.lam + (1 - mix.lam) == pytest.approx(1.0)
        if mix.kind == "mixup":
            # each mixed image is lam * itself + (1 - lam) * its partner: solve for the partner and find it
            partner = (xm - mix.lam * x) / max(1 - mix.lam, 1e-6)
            if 1 - mix.lam > 1e-3:
                d = torch.cdist(partner.flatten(1), x.flatten(1))
                assert torch.equal(y[d.argmin(1)], mix.y_b)
        else:
            # lam is the exact share of pixels kept from the first image
            same = (xm == x).all(1).flatten(1).float().mean(1)
            assert same.min() >= mix.lam - 1e-6
            assert same.mean() == pytest.approx(mix.lam, abs=0.05) or mix.lam > 0.99
    assert kinds == ({"mixup"} if not cutmix else {"cutmix"} if not mixup else {"mixup", "cutmix"})
    m.set_epoch(2)
    first = m.mix(x, y)
    m.set_epoch(2)
    assert torch.equal(m.mix(x, y)[0], first[0])


def test_mixed_loss_is_the_weighted_pair():
    logits, y = torch.randn(8, 5), torch.arange(8) % 5
    m = Mixer(1.0, seed=0)
    _, mix = m.mix(torch.randn(8, 3, 4, 4), y)
    ce = torch.nn.functional.cross_entropy
    want = mix.lam * ce(logits, y) + (1 - mix.lam) * ce(logits, mix.y_b)
    assert torch.allclose(Mixer.loss(ce, logits, y, mix), want)
    assert torch.equal(Mixer.loss(ce, logits, y, None), ce(logits, y))


def test_reference_stream_unchanged_when_off():
    """Switches off: the loader yields what it yielded before (same draws). Each switch draws from its own
    stream, so turning cutout on changes only pixels inside the holes (same crops, flips and order)."""
    imgs, labels = _images(40), torch.arange(40) % 4
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, pad=2, seed=3)
    plain = list(TensorLoader(imgs, labels, **kw))
    off = list(TensorLoader(imgs, labels, policy=None, cutout=0, **kw))
    cut = list(TensorLoader(imgs, labels, cutout=4, **kw))
    for (a, ya), (b, yb), (c, yc) in zip(plain, off, cut):
        assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(ya, yc)
        black = (-0.5 / 0.25)
        changed = (a != c).any(1)
        assert changed.any() and torch.all(c.permute(0, 2, 3, 1)[changed] == black)


def test_recipe_params_validated():
    p = resolve({"augment": "randaugment", "cutout": 8, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "label_smoothing": 0.1})
    assert p["augment"] == "randaugment" and p["cutout"] == 8
    for bad, match in [({"augment": "trivial"}, "augment"), ({"mixup_alpha": -1.0}, "mixup_alpha"),
                       ({"label_smoothing": 1.0}, "label_smoothing"), ({"cutout": 40}, "larger than"),
                       ({"randaugment_magnitude": 31}, "randaugment"),
                       ({"dataset": "folder", "augment": "autoaugment"}, "tensor input path")]:
        with pytest.raises(LtKitError, match=match):
            resolve(bad)


def test_label_smoothing_reaches_every_loss():
    from lt_kit.methods import make_criterion
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    counts = [50, 20, 8, 3]
    for head, loss in [("causal_norm", "ce"), ("linear", "logit_adjusted"), ("norm_linear", "ldam_drw")]:
        base = resolve({"head": head, "loss": loss, "milestones": [2, 3], "epochs": 4})
        plain = make_criterion(base, counts, 4)(logits, y)
        smooth = make_criterion({**base, "label_smoothing": 0.2}, counts, 4)(logits, y)
        assert not torch.allclose(plain, smooth), loss


@pytest.mark.parametrize("sets", [{"augment": "autoaugment", "cutout": 4, "mixup_alpha": 1.0, "cutmix_alpha": 1.0,
                                   "label_smoothing": 0.1},
                                  {"augment": "randaugment", "head": "linear", "loss": "logit_adjusted"}])
def test_switches_end_to_end(tmp_path, sets):
    from lt_kit.runs.rundir import read_json
    from lt_kit.training.fit import fit
    p = resolve({"dataset": "digits_lt", "epochs": 2, "warmup_epochs": 1, "milestones": [2], "device": "cpu", **sets})
    m = fit(p, tmp_path / "run", progress=False)
    assert 0 <= m["softmax"]["overall"] <= 1
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["softmax"] == m["softmax"]
    import yaml
    params = yaml.safe_load((tmp_path / "run" / "params.yaml").read_text())
    for k, v in sets.items():
        assert params[k] == v


def test_sam_step_uses_the_gradient_at_the_moved_weights():
    """One SAM step by hand (torch.func on a copy) equals train_one_epoch's SAM step; BN stats move once."""
    import copy

    import lt_kit.training.sam as sam
    from lt_kit.models import LTModel
    from lt_kit.training.loop import train_one_epoch
    torch.manual_seed(0)
    model = LTModel("resnet32", 4)
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    ce = torch.nn.functional.cross_entropy
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_one_epoch(model, [(x, y)], opt, mu=0.9, epoch=1, criterion=ce, sam_rho=0.05)
    # by hand: gradient at w, move by rho * g / ||g||, gradient there (BN stats frozen), back, SGD step
    ce(ref(x)[0], y).backward()
    g = [p.grad.clone() for p in ref.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    bn_after_first = {k: v.clone() for k, v in ref.state_dict().items() if "running" in k}
    with torch.no_grad():
        for p, t in zip(ref.parameters(), g):
            p.add_(t * 0.05 / (norm + 1e-12))
    ref.zero_grad(set_to_none=True)
    with sam.frozen_bn_stats(ref):
        ce(ref(x)[0], y).backward()
    with torch.no_grad():
        for p, t in zip(ref.parameters(), g):
            p.sub_(t * 0.05 / (norm + 1e-12))
            p.sub_(0.1 * p.grad)                     # the first SGD step: momentum buffer = grad
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        if k != "direction":                         # (the by-hand step does not update the direction)
            torch.testing.assert_close(a, b, msg=k)
    for k, v in bn_after_first.items():
        assert torch.equal(model.state_dict()[k], v), k          # the second pass left BN statistics alone


def test_sam_switch_end_to_end(tmp_path):
    from lt_kit.training.fit import fit
    p = resolve({"dataset": "digits_lt", "epochs": 1, "warmup_epochs": 1, "milestones": [2], "device": "cpu",
                 "sam_rho": 0.05, "mixup_alpha": 0.2})
    m = fit(p, tmp_path / "run", progress=False)
    assert 0 <= m["softmax"]["overall"] <= 1
    with pytest.raises(LtKitError, match="sam_rho"):
        resolve({"sam_rho": -0.1})
    with pytest.raises(LtKitError, match="sam_rho"):
        resolve({"sam_rho": 0.05, "fast_step": True})
