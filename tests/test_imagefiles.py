"""Image-file data sets on trees the tests write (small JPEGs): ImageNet-LT's list files end to end with the
reference recipe, your own class-per-subfolder ``folder`` (long-tailed as it is, or cut to the profile), and
the bad inputs that must stop a run before its first training step."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_kit.cli import main
from lt_kit.config import load_params_file, resolve
from lt_kit.data.datasets import dataset_info
from lt_kit.data.imagefiles import load_file_dataset, read_list_file
from lt_kit.errors import LtKitError

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_LT = str(ROOT / "params" / "imagenet_lt_resnext50.yaml")
TINY = ["arch=resnet32", "image_size=32", "epochs=2", "batch_size=8", "num_workers=0", "device=cpu"]


def _jpeg(path: Path, cls: int, rng: np.random.RandomState, size: int = 40) -> None:
    """A class-coloured noisy square: learnable, and a real JPEG read through PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = np.array([(cls * 97) % 256, (cls * 57 + 80) % 256, (cls * 31 + 160) % 256])
    img = np.clip(colour + rng.randint(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)


def imagenet_lt_tree(root: Path, train=(24, 8, 3), val: int = 2, test: int = 3, labels=(0, 1, 999)) -> Path:
    """ImageNet-LT's layout: ``split/wnid/file.JPEG`` under an image root, and one ``relative/path label``
    list file per split. Three of the 1000 classes, one of them the last id."""
    rng = np.random.RandomState(0)
    for split, per in (("train", train), ("val", [val] * len(labels)), ("test", [test] * len(labels))):
        lines = []
        for label, n in zip(labels, per):
            for i in range(n):
                rel = f"{split}/n{label:08d}/n{label:08d}_{i}.JPEG"
                _jpeg(root / rel, label, rng)
                lines.append(f"{rel} {label}")
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def folder_tree(root: Path, counts: dict[str, int]) -> Path:
    """Class-per-subfolder images."""
    rng = np.random.RandomState(len(counts))
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _jpeg(root / name / f"{i}.jpg", c, rng, size=36)
    return root


pytestmark = pytest.mark.usefixtures("one_thread")    # conftest.py: tiny models, one thread


def _train(args: list[str], run: Path, capsys) -> dict:
    code = main(["train", *args, "--run-dir", str(run), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "run dir:" in out.out
    return json.loads((run / "metrics.json").read_text())


# --------------------------------------------------------------------------- ImageNet-LT
def test_imagenet_lt_end_to_end_with_the_reference_recipe(tmp_path, capsys):
    """The reference's ImageNet-LT path on a tiny tree: list files by path, DataLoader with a worker,
    torchvision transforms, cosine lr and lr-scaled mu, alpha 3, the best epoch chosen on the val list and
    reported on the test list, many/medium/few by training counts over ImageNet's 1000 classes."""
    data = imagenet_lt_tree(tmp_path / "imagenet")
    run = tmp_path / "run"
    sets = [*TINY, "num_workers=1", f"data_root={data}", f"train_list={data}/ImageNet_LT_train.txt",
            f"val_list={data}/ImageNet_LT_val.txt", f"test_list={data}/ImageNet_LT_test.txt",
            "many_threshold=15", "few_threshold=5"]
    m = _train(["--params", IMAGENET_LT, *[a for s in sets for a in ("--set", s)]], run, capsys)

    params = load_params_file(IMAGENET_LT)                      # the recipe came from the preset
    assert params["schedule"] == "cosine" and params["select_best"] and params["alpha"] == 3.0
    assert m["alpha"] == 3.0 and m["head"] == "causal_norm"
    hist = json.loads((run / "history.json").read_text())
    assert [h["lr"] for h in hist] == pytest.approx([0.1, 0.0], abs=1e-12)      # cosine over 2 epochs, lr 0.2
    assert [h["mu"] for h in hist] == pytest.approx([0.9, 1.0])                # 1 - 0.1 * min(50 lr, 1)
    val = [h["val_acc"] for h in hist]                                           # chosen on val ...
    assert m["best_epoch"] == 1 + int(np.argmax(val)) and (run / "best.pt").is_file()
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == m["best_epoch"]

    counts = m["train_counts"]                                   # ... reported on test
    assert len(counts) == 1000 and (counts[0], counts[1], counts[999]) == (24, 8, 3) and sum(counts) == 35
    assert m["thresholds"] == {"many": 15, "few": 5}
    labels = torch.load(run / "features.pt", weights_only=True)["labels"]
    assert sorted(labels.tolist()) == [0] * 3 + [1] * 3 + [999] * 3
    for key in ("softmax", "tde"):
        acc = m[key]["per_class"]
        assert all(math.isnan(a) for i, a in enumerate(acc) if i not in (0, 1, 999))   # no test image: NaN
        # one class per split; the 997 classes with no training image are "few" but NaN, so left out
        assert (m[key]["many"], m[key]["medium"], m[key]["few"]) == (acc[0], acc[1], acc[999])

    # the reported softmax numbers are the best epoch's weights, not the last epoch's
    from lt_kit.training.score import score_run
    best = score_run(run, alpha=0.0, checkpoint=run / "best.pt")
    assert np.allclose(best["metrics"]["per_class"], m["softmax"]["per_class"], equal_nan=True)
    # 997 classes have no training image: logit adjustment (log prior -inf) is recorded as not scored, with why
    assert "every class" in m["methods"]["logit_adjust"]["unavailable"] and "rule" in m["methods"]["tde"]


def test_imagenet_lt_list_checks(tmp_path):
    data = imagenet_lt_tree(tmp_path / "imagenet", train=(2, 1, 1), val=1, test=1)
    base = {"dataset": "imagenet_lt", "data_root": str(data), "image_size": 32}
    info = dataset_info("imagenet_lt")
    samples = read_list_file(data / "ImageNet_LT_train.txt", data)
    assert samples[0] == (str(data / "train/n00000000/n00000000_0.JPEG"), 0) and len(samples) == 4

    d = load_file_dataset(resolve(base), info)                  # lists found in data_root by default
    assert len(d["train"]) == 4 and len(d["val"]) == 3 and len(d["test"]) == 3

    (data / "bad.txt").write_text("train/n00000000/n00000000_0.JPEG zero\n")
    with pytest.raises(LtKitError, match=r"bad.txt:1: expected 'relative/path label'"):
        load_file_dataset(resolve({**base, "train_list": str(data / "bad.txt")}), info)
    (data / "big.txt").write_text("train/n00000000/n00000000_0.JPEG 1000\n")
    with pytest.raises(LtKitError, match="label 1000 in the test list .* outside 0..999"):
        load_file_dataset(resolve({**base, "test_list": str(data / "big.txt")}), info)
    with pytest.raises(LtKitError, match="list file .*nowhere.txt not found"):
        load_file_dataset(resolve({**base, "val_list": str(data / "nowhere.txt")}), info)   # named: must exist
    with pytest.raises(LtKitError, match="long-tailed already"):
        load_file_dataset(resolve({**base, "imbalance_ratio": 10.0}), info)
    (data / "ImageNet_LT_val.txt").unlink()
    assert load_file_dataset(resolve(base), info)["val"] is None           # no val list: fine ...
    with pytest.raises(LtKitError, match="select_best picks the best epoch on the val list"):
        load_file_dataset(resolve({**base, "select_best": True}), info)   # ... unless it must pick on it
    with pytest.raises(LtKitError, match="eval_every scores the val list"):
        load_file_dataset(resolve({**base, "eval_every": 1}), info)       # ... or score it


def test_eval_every_without_a_val_list_is_refused_before_the_run_is_written(tmp_path, capsys):
    data = imagenet_lt_tree(tmp_path / "imagenet", train=(2, 1, 1), val=1, test=1)
    (data / "ImageNet_LT_val.txt").unlink()
    run = tmp_path / "run"
    sets = [*TINY, "dataset=imagenet_lt", f"data_root={data}", "epochs=1", "batch_size=2", "eval_every=1"]
    assert main(["train", *[a for s in sets for a in ("--set", s)], "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval_every scores the val list") and err.count("\n") == 1, err
    assert not run.exists()


def test_a_validation_or_training_split_that_is_the_test_set_is_refused(tmp_path):
    data = imagenet_lt_tree(tmp_path / "imagenet", train=(2, 1, 1), val=1, test=1)
    info = dataset_info("imagenet_lt")
    base = {"dataset": "imagenet_lt", "data_root": str(data), "image_size": 32}
    with pytest.raises(LtKitError, match="val_list .*ImageNet_LT_test.txt is the test set .test_list .*a "
                                         "validation split that is the test set"):
        load_file_dataset(resolve({**base, "val_list": str(data / "ImageNet_LT_test.txt")}), info)
    with pytest.raises(LtKitError, match="train_list .* is the test set"):         # given through another path
        load_file_dataset(resolve({**base, "train_list": str(data / "." / "ImageNet_LT_test.txt")}), info)
    train = folder_tree(tmp_path / "train", {"a": 2, "b": 2})
    test = folder_tree(tmp_path / "test", {"a": 1, "b": 1})
    (tmp_path / "link").symlink_to(test, target_is_directory=True)
    base = {"dataset": "folder", "data_root": str(train), "test_root": str(test), "image_size": 32}
    for val in (test, tmp_path / "link"):
        with pytest.raises(LtKitError, match="val_root .* is the test set .test_root"):
            load_file_dataset(resolve({**base, "val_root": str(val)}), dataset_info("folder"))
    with pytest.raises(LtKitError, match="data_root .* is the test set .test_root .*training on the test"):
        load_file_dataset(resolve({**base, "data_root": str(test)}), dataset_info("folder"))


# --------------------------------------------------------------------------- your own folder
def test_folder_already_long_tailed(tmp_path, capsys):
    """Class counts come from the data; hidden folders and files (Jupyter, macOS) are not classes/images."""
    train = folder_tree(tmp_path / "train", {"cat": 12, "dog": 6, "emu": 3})
    (train / ".ipynb_checkpoints").mkdir()
    _jpeg(train / ".ipynb_checkpoints" / "x.jpg", 0, np.random.RandomState(0))
    (train / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 not a jpeg")
    (train / "cat" / "notes.txt").write_text("not an image")
    test = folder_tree(tmp_path / "test", {"cat": 3, "dog": 3, "emu": 3})
    run = tmp_path / "run"
    sets = [*TINY, "dataset=folder", f"data_root={train}", f"test_root={test}", "epochs=1", "batch_size=4",
            "many_threshold=10", "few_threshold=4"]
    m = _train([a for s in sets for a in ("--set", s)], run, capsys)
    assert m["class_names"] == ["cat", "dog", "emu"] and m["train_counts"] == [12, 6, 3]
    assert np.array_equal(np.load(run / "subset_indices.npy"), np.arange(21))
    for key in ("softmax", "tde"):
        acc = m[key]["per_class"]
        assert len(acc) == 3 and not any(math.isnan(a) for a in acc)
        assert (m[key]["many"], m[key]["medium"], m[key]["few"]) == tuple(acc)
    assert torch.load(run / "features.pt", weights_only=True)["labels"].tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_folder_made_long_tailed_with_the_profile(tmp_path, capsys):
    """A balanced folder cut to the reference profile: head = first class folder, seeded and saved subset."""
    train = folder_tree(tmp_path / "train", {"a": 8, "b": 8, "c": 8})
    test = folder_tree(tmp_path / "test", {"a": 2, "b": 2, "c": 2})
    base = {"dataset": "folder", "data_root": str(train), "test_root": str(test), "image_size": 32,
            "imbalance_ratio": 4.0}
    info = dataset_info("folder")
    d0, d0b = (load_file_dataset(resolve(base), info) for _ in range(2))
    assert d0["train_counts"] == [8, 4, 2] and len(d0["train"]) == 14           # long_tail_counts(3, 8, 4)
    assert np.bincount(d0["train"].labels).tolist() == [8, 4, 2]
    assert np.array_equal(d0["subset_indices"], d0b["subset_indices"])        # seeded
    d1 = load_file_dataset(resolve({**base, "subset_seed": 1}), info)
    assert not np.array_equal(d0["subset_indices"], d1["subset_indices"])
    assert load_file_dataset(resolve({**base, "max_per_class": 6}), info)["train_counts"] == [6, 3, 1]
    with pytest.raises(LtKitError, match="class 'a' has 8 training images but the long-tail profile asks for 9"):
        load_file_dataset(resolve({**base, "max_per_class": 9}), info)

    run = tmp_path / "run"
    sets = [*TINY, "dataset=folder", f"data_root={train}", f"test_root={test}", "imbalance_ratio=4",
            "epochs=1", "batch_size=4"]
    m = _train([a for s in sets for a in ("--set", s)], run, capsys)
    assert m["train_counts"] == [8, 4, 2] and m["class_names"] == ["a", "b", "c"]
    assert np.array_equal(np.load(run / "subset_indices.npy"), d0["subset_indices"])


def test_folder_checks(tmp_path):
    train = folder_tree(tmp_path / "train", {"a": 2, "b": 2})
    info = dataset_info("folder")
    base = {"dataset": "folder", "data_root": str(train), "image_size": 32}
    with pytest.raises(LtKitError, match="dataset=folder needs test_root"):
        load_file_dataset(resolve(base), info)
    with pytest.raises(LtKitError, match="image folder .*missing not found"):
        load_file_dataset(resolve({**base, "test_root": str(tmp_path / "missing")}), info)
    (tmp_path / "flat").mkdir()
    _jpeg(tmp_path / "flat" / "x.jpg", 0, np.random.RandomState(0))
    with pytest.raises(LtKitError, match="has no class subfolders"):
        load_file_dataset(resolve({**base, "data_root": str(tmp_path / "flat"), "test_root": str(train)}), info)
    (train / "a" / "0.jpg").write_bytes(b"truncated")                   # files are checked at read time
    d = load_file_dataset(resolve({**base, "test_root": str(folder_tree(tmp_path / "test", {"a": 1, "b": 1}))}),
                          info)
    with pytest.raises(LtKitError, match=r"cannot read image .*0\.jpg"):
        d["train"][0]


# --------------------------------------------------------------------------- bad input through the CLI
def _cli_error(args: list[str], run: Path) -> str:
    """``python -m lt_kit train ...`` must exit 2 with one line ``error: ...`` and leave no run behind."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "lt_kit", "train", *args, "--run-dir", str(run), "--quiet"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=run.parent)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert not (run / "checkpoint.pt").exists()
    return lines[0]


def test_cli_list_file_naming_missing_images(tmp_path):
    data = imagenet_lt_tree(tmp_path / "imagenet", train=(2, 1, 1), val=1, test=1)
    (data / "train/n00000001/n00000001_0.JPEG").unlink()
    err = _cli_error(["--set", "dataset=imagenet_lt", "--set", f"data_root={data}"], tmp_path / "run")
    assert "names 1 image(s) missing" in err and "train/n00000001/n00000001_0.JPEG" in err
    assert "ImageNet_LT_train.txt" in err


def test_cli_empty_class_folder(tmp_path):
    train = folder_tree(tmp_path / "train", {"a": 2, "c": 2})
    (train / "b").mkdir()
    test = folder_tree(tmp_path / "test", {"a": 1, "b": 1, "c": 1})
    err = _cli_error(["--set", "dataset=folder", "--set", f"data_root={train}", "--set", f"test_root={test}"],
                     tmp_path / "run")
    assert f"class folder {train / 'b'} holds no images" in err


def test_cli_train_and_test_classes_differ(tmp_path):
    train = folder_tree(tmp_path / "train", {"a": 2, "b": 2, "emu": 2})
    test = folder_tree(tmp_path / "test", {"a": 1, "b": 1, "fox": 1})
    err = _cli_error(["--set", "dataset=folder", "--set", f"data_root={train}", "--set", f"test_root={test}"],
                     tmp_path / "run")
    assert "class folders differ: only in train ['emu'], only in test ['fox']" in err


def test_folder_val_root_is_the_validation_split(tmp_path):
    """``val_root``: a class-per-subfolder validation split for ``folder``; select_best needs it, and its
    classes must match the training folders."""
    train = folder_tree(tmp_path / "train", {"a": 6, "b": 4})
    test = folder_tree(tmp_path / "test", {"a": 2, "b": 2})
    val = folder_tree(tmp_path / "val", {"a": 3, "b": 3})
    base = {"dataset": "folder", "data_root": str(train), "test_root": str(test), "image_size": 32}
    with pytest.raises(LtKitError, match="select_best needs a validation split.*set val_root"):
        resolve({**base, "select_best": True})
    d = load_file_dataset(resolve({**base, "val_root": str(val), "select_best": True}), dataset_info("folder"))
    assert len(d["val"]) == 6 and np.bincount(d["val"].labels).tolist() == [3, 3]
    folder_tree(tmp_path / "val2", {"a": 1, "c": 1})
    with pytest.raises(LtKitError, match="val_root .* class folders differ"):
        load_file_dataset(resolve({**base, "val_root": str(tmp_path / "val2")}), dataset_info("folder"))
