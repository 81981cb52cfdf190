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
