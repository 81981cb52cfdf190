import pickle

import numpy as np
import pytest
import torch
from conftest import write_cifar

from lt_kit.data.datasets import load_tensor_dataset, long_tail_counts, long_tail_indices, read_cifar, read_digits
from lt_kit.errors import LtKitError


def test_cifar10_ratio100_profile():
    c = long_tail_counts(10, 5000, 100)
    assert c == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50] and sum(c) == 12406


@pytest.mark.parametrize("classes,max_,ratio,total", [(100, 500, 100, 10847), (10, 5000, 50, 13996),
                                                     (10, 5000, 10, 20431), (100, 500, 50, 12608),
                                                     (100, 500, 10, 19573)])
def test_reference_totals(classes, max_, ratio, total):
    assert sum(long_tail_counts(classes, max_, ratio)) == total


def test_ratio_one_is_balanced_and_below_one_is_refused():
    assert long_tail_counts(5, 100, 1) == [100] * 5
    with pytest.raises(LtKitError, match=">= 1"):
        long_tail_counts(5, 100, 0.5)


def test_subset_is_deterministic_and_seeded():
    labels = np.repeat(np.arange(4), 50)
    np.random.RandomState(3).shuffle(labels)
    counts = [50, 20, 8, 3]
    a, b = long_tail_indices(labels, counts, 0), long_tail_indices(labels, counts, 0)
    c = long_tail_indices(labels, counts, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == counts
    assert len(set(a.tolist())) == len(a)


def test_seed0_reproduces_the_ldam_global_rng_subset():
    labels = np.repeat(np.arange(3), 10)
    np.random.seed(0)                                  # LDAM: np.random.seed(0) then shuffle class by class
    want = []
    for c, n in enumerate([10, 5, 2]):
        idx = np.flatnonzero(labels == c)
        np.random.shuffle(idx)
        want.append(idx[:n])
    assert np.array_equal(long_tail_indices(labels, [10, 5, 2], 0), np.concatenate(want))


def test_cifar10_reader_on_torchvision_layout(tmp_path):
    write_cifar(tmp_path, per_class_train=30, per_class_test=10)
    train, test, names = read_cifar("cifar10_lt", tmp_path)
    assert train.images.shape == (300, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (100, 3, 32, 32) and names[0] == "c0"
    # pixel layout: the 3072 row is 1024 R, then G, then B, row-major
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    assert torch.equal(train.images[0], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))


def test_cifar100_reader_and_lt_subset(tmp_path):
    write_cifar(tmp_path, num_classes=100, per_class_train=12, per_class_test=2)
    d = load_tensor_dataset("cifar100_lt", tmp_path, imbalance_ratio=10, max_per_class=None, subset_seed=0)
    assert d["train_counts"] == long_tail_counts(100, 12, 10)
    assert np.bincount(d["train"].labels.numpy(), minlength=100).tolist() == d["train_counts"]
    assert len(d["test"].labels) == 200 and d["class_names"][1] == "f1"


def test_missing_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(LtKitError, match="is missing.*download=true"):
        read_cifar("cifar10_lt", tmp_path)


def test_incomplete_folder_names_the_missing_files(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(LtKitError, match="incomplete.*data_batch_3"):
        read_cifar("cifar10_lt", tmp_path)


def test_corrupt_file_is_reported(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(LtKitError, match="test_batch is corrupt"):
        read_cifar("cifar10_lt", tmp_path)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []

    class FakeCIFAR10:                                  # stands in for torchvision's download code (no network)
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_cifar(tmp_path)
    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    train, _, _ = read_cifar("cifar10_lt", tmp_path, download=True)
    assert calls == [(str(tmp_path), True)] and len(train.labels) == 300


def test_embedded_digits_are_real_and_split_balanced():
    train, test, names = read_digits()
    assert len(train.labels) + len(test.labels) == 1797
    assert np.bincount(test.labels.numpy()).tolist() == [50] * 10
    assert train.images.shape[1:] == (3, 16, 16) and train.images.float().std() > 50
    d = load_tensor_dataset("digits_lt", "", imbalance_ratio=20, max_per_class=120, subset_seed=0)
    assert d["train_counts"] == [120, 86, 61, 44, 31, 22, 16, 11, 8, 6]


@pytest.fixture
def offline(monkeypatch):
    """No network, as on an offline machine: every URL torchvision opens fails in name resolution. torchvision's
    own download code runs otherwise (it creates data_root before it opens the URL)."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_failed_download_leaves_no_folder_behind(tmp_path, offline):
    root = tmp_path / "wrong" / "nested" / "data"
    with pytest.raises(LtKitError) as e:
        read_cifar("cifar10_lt", root, download=True)
    msg = str(e.value)
    assert "\n" not in msg and "could not download cifar10" in msg and "Temporary failure" in msg, msg
    assert f"put cifar-10-batches-py/ in {root}" in msg, msg
    assert list(tmp_path.iterdir()) == []            # nor wrong/ nor wrong/nested/: the call created them all


def test_a_failed_download_keeps_a_folder_that_was_there(tmp_path, offline):
    root = tmp_path / "data"
    (root / "mine").mkdir(parents=True)              # the user's: an empty folder and a file beside it
    (root / "notes.txt").write_text("keep")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (root, empty):
        with pytest.raises(LtKitError, match="could not download cifar10"):
            read_cifar("cifar10_lt", folder, download=True)
    assert (root / "mine").is_dir() and (root / "notes.txt").read_text() == "keep" and empty.is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["mine", "notes.txt"]


def test_a_download_cut_short_removes_its_partial_archive(tmp_path, monkeypatch):
    """The network drops mid-file: the part of the archive written and the folder made for it both go."""
    import urllib.error

    from torchvision.datasets import utils as tvu

    def cut_short(url, filename, chunk_size=1024):
        with open(filename, "wb") as f:
            f.write(b"\x1f\x8b partial")
        raise urllib.error.URLError("Connection reset by peer")
    monkeypatch.setattr(tvu, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tvu, "_urlretrieve", cut_short)
    root = tmp_path / "data"
    with pytest.raises(LtKitError, match="Connection reset by peer"):
        read_cifar("cifar10_lt", root, download=True)
    assert not root.exists()
