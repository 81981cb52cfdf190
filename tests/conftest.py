"""Shared fixtures. Everything runs on the CPU with data the tests make or that ships in a package."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(min(2, os.cpu_count() or 1))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A run dir trained with params/smoke.yaml (digits, 3 epochs): metrics, checkpoint and feature cache."""
    from lt_kit.config import load_params_file, resolve
    from lt_kit.training.fit import fit
    run = tmp_path_factory.mktemp("smoke") / "run"
    fit(resolve(load_params_file(ROOT / "params" / "smoke.yaml")), run, progress=False)
    return run


@pytest.fixture(scope="session")
def smoke_val_run(tmp_path_factory) -> Path:
    """``smoke_run``'s recipe with a validation split (5 images per class): val_features.pt too."""
    from lt_kit.config import load_params_file, resolve
    from lt_kit.training.fit import fit
    run = tmp_path_factory.mktemp("smoke_val") / "run"
    fit(resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), "val_per_class": 5}), run, progress=False)
    return run


def write_cifar(root: Path, *, num_classes: int = 10, per_class_train: int = 30, per_class_test: int = 10,
                seed: int = 0) -> Path:
    """Write a small CIFAR-10 (or -100) in torchvision's pickle layout; images are class-coloured noise."""
    rng = np.random.RandomState(seed)
    def batch(n_per_class):
        labels = np.repeat(np.arange(num_classes), n_per_class)
        rng.shuffle(labels)
        base = (labels[:, None] * 23 % 256).astype(np.int64)
        data = np.clip(base + rng.randint(-40, 40, (len(labels), 3072)), 0, 255).astype(np.uint8)
        return data, labels.tolist()
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            d, y = batch(per_class_train // 5)
            pickle.dump({"data": d, "labels": y}, open(folder / f"data_batch_{i}", "wb"))
        d, y = batch(per_class_test)
        pickle.dump({"data": d, "labels": y}, open(folder / "test_batch", "wb"))
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, open(folder / "batches.meta", "wb"))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", per_class_train), ("test", per_class_test)):
            d, y = batch(n)
            pickle.dump({"data": d, "fine_labels": y, "coarse_labels": [v // 5 for v in y]}, open(folder / name, "wb"))
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(num_classes)]}, open(folder / "meta", "wb"))
    return folder


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is faster than two fighting the other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    write_cifar(tmp_path)
    return tmp_path


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    """A private copy of ``smoke_run`` for tests that write into the run dir (``test`` at another alpha)."""
    import shutil
    return Path(shutil.copytree(smoke_run, tmp_path / "run"))
