"""iNaturalist 2018 and Places-LT through the list-file path, on small image trees in each data set's own list
format (the Decoupling and OLTR lists): counts and many/medium/few from the lists, the recipes, where each
validation split comes from, and the list errors that must stop a run before its first step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_imagefiles import TINY, _cli_error, _jpeg, _train

from lt_kit.config import load_params_file, resolve
from lt_kit.data.datasets import dataset_info
from lt_kit.data.imagefiles import load_file_dataset
from lt_kit.errors import LtKitError
from lt_kit.maths.metrics import shot_groups

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")    # conftest.py: tiny models, one thread


def _write(root: Path, name: str, rows: list[tuple[str, int]], rng) -> None:
    for rel, label in rows:
        _jpeg(root / rel, label, rng, size=16)
    (root / name).write_text("".join(f"{rel} {label}\n" for rel, label in rows))


def inat_tree(root: Path, train=(110, 30, 2), test: int = 3, labels=(0, 5, 8141)) -> Path:
    """The Decoupling lists' layout: ``train_val2018/<super>/<id>/<hash>.jpg id`` in iNaturalist18_train.txt and
    iNaturalist18_val.txt (the reported set); no third list."""
    rng = np.random.RandomState(0)
    rows = {"train": [], "val": []}
    for label, n in zip(labels, train):
        rows["train"] += [(f"train_val2018/Plantae/{label}/t{i:04d}.jpg", label) for i in range(n)]
        rows["val"] += [(f"train_val2018/Plantae/{label}/v{i:04d}.jpg", label) for i in range(test)]
    for split, r in rows.items():
        _write(root, f"iNaturalist18_{split}.txt", r, rng)
    return root


def places_tree(root: Path, train=(105, 25, 5), val: int = 2, test: int = 3, labels=(0, 1, 364)) -> Path:
    """OLTR's layout: ``train/<scene>/<n>.jpg label`` (and val/, test/) in Places_LT_{train,val,test}.txt."""
    rng = np.random.RandomState(1)
    scenes = {0: "airfield", 1: "airplane_cabin", 364: "zen_garden"}
    for split, per in (("train", train), ("val", [val] * 3), ("test", [test] * 3)):
        rows = [(f"{split}/{scenes[c]}/{i:08d}.jpg", c) for c, n in zip(labels, per) for i in range(n)]
        _write(root, f"Places_LT_{split}.txt", rows, rng)
    return root


# --------------------------------------------------------------------------- recipes
def test_recipes_resolve_from_the_reference_configs():
    inat = resolve({"dataset": "inat2018"})         # classifier-balancing config/iNaturalist18/feat_unifrom.yaml
    assert (inat["arch"], inat["epochs"], inat["batch_size"], inat["lr"], inat["weight_decay"], inat["schedule"],
            inat["mu_schedule"], inat["alpha"]) == ("resnet50", 90, 512, 0.2, 1e-4, "cosine", "lr_scaled", 3.0)
    places = resolve({"dataset": "places_lt"})      # TDE's config/Places_LT/causal_norm.yaml
    assert (places["arch"], places["epochs"], places["batch_size"], places["lr"], places["weight_decay"],
            places["alpha"]) == ("resnext50_32x4d", 90, 512, 0.2, 5e-4, 3.0)
    for p in (inat, places):
        assert (p["many_threshold"], p["few_threshold"], p["imbalance_ratio"]) == (100, 20, 1.0)
    two_stage = lambda p: tuple(p[f"{m}_{k}"] for m in ("crt", "lws")  # noqa: E731
                                for k in ("epochs", "lr", "batch_size", "weight_decay"))
    assert two_stage(inat) == (30, 0.2, 512, 1e-4, 5, 0.2, 512, 1e-4)       # its cls_crt.yaml / cls_lws.yaml
    assert two_stage(places) == (10, 0.1, 256, 5e-4, 5, 0.1, 256, 5e-4)
    assert two_stage(resolve({"dataset": "cifar10_lt"})) == (10, 0.2, 512, 5e-4, 5, 0.2, 512, 5e-4)   # ImageNet-LT's
    assert dataset_info("inat2018").mean == (0.466, 0.471, 0.380) and not dataset_info("inat2018").color_jitter
    assert dataset_info("inat2018").num_classes == 8142 and dataset_info("places_lt").num_classes == 365
    frozen = resolve(load_params_file(ROOT / "params" / "places_lt_resnet152_frozen.yaml"))
    assert (frozen["arch"], frozen["pretrained"], frozen["freeze_backbone"], frozen["epochs"], frozen["batch_size"],
            frozen["milestones"], frozen["lr_factor"]) == ("resnet152", "torchvision:IMAGENET1K_V1", True, 30, 128,
                                                           [10, 20], 0.1)
    for name in ("inat2018_resnet50", "places_lt_resnext50"):
        resolve(load_params_file(ROOT / "params" / f"{name}.yaml"))


# --------------------------------------------------------------------------- counts, splits, validation
def test_inat2018_counts_splits_and_a_validation_split_from_the_training_list(tmp_path):
    data = inat_tree(tmp_path / "inat")
    info, base = dataset_info("inat2018"), {"dataset": "inat2018", "data_root": str(data), "image_size": 16}
    d = load_file_dataset(resolve(base), info)
    counts = d["train_counts"]
    assert len(counts) == 8142 and (counts[0], counts[5], counts[8141]) == (110, 30, 2) and sum(counts) == 142
    assert d["val"] is None and len(d["test"]) == 9                     # the val list is the reported (test) set
    groups = shot_groups(counts, 100, 20)
    assert 0 in groups["many"] and 5 in groups["medium"] and 8141 in groups["few"]

    with pytest.raises(LtKitError, match="select_best needs a validation split .*set val_per_class"):
        resolve({**base, "select_best": True})
    d = load_file_dataset(resolve({**base, "val_per_class": 2, "select_best": True}), info)
    # a class with val_per_class images or fewer gives none and trains on all it has
    assert np.bincount(d["val"].labels, minlength=8142)[[0, 5, 8141]].tolist() == [2, 2, 0]
    assert (d["train_counts"][0], d["train_counts"][5], d["train_counts"][8141]) == (108, 28, 2)
    assert not set(d["val_indices"]) & set(d["subset_indices"])
    assert sorted([*d["val_indices"], *d["subset_indices"]]) == list(range(142))
    again = load_file_dataset(resolve({**base, "val_per_class": 2}), info)
    assert np.array_equal(again["val_indices"], d["val_indices"])       # seeded by subset_seed
    with pytest.raises(LtKitError, match="val_per_class=200 leaves no validation image"):
        load_file_dataset(resolve({**base, "val_per_class": 200}), info)
    with pytest.raises(LtKitError, match="val_list .*iNaturalist18_val.txt is the test set"):
        load_file_dataset(resolve({**base, "val_list": str(data / "iNaturalist18_val.txt")}), info)


def test_places_lt_counts_splits_and_its_val_list(tmp_path):
    data = places_tree(tmp_path / "places")
    info, base = dataset_info("places_lt"), {"dataset": "places_lt", "data_root": str(data), "image_size": 16}
    d = load_file_dataset(resolve({**base, "select_best": True}), info)
    counts = d["train_counts"]
    assert len(counts) == 365 and (counts[0], counts[1], counts[364]) == (105, 25, 5) and sum(counts) == 135
    assert np.bincount(d["val"].labels).tolist()[:2] == [2, 2] and len(d["val"]) == 6 and len(d["test"]) == 9
    assert d["val_indices"] is None and np.array_equal(d["subset_indices"], np.arange(135))
    groups = shot_groups(counts, 100, 20)
    assert 0 in groups["many"] and 1 in groups["medium"] and 364 in groups["few"]
    drawn = load_file_dataset(resolve({**base, "val_per_class": 1}), info)     # instead of the val list
    assert len(drawn["val"]) == 3 and sum(drawn["train_counts"]) == 132
    with pytest.raises(LtKitError, match="val_list and val_per_class=1 both name a validation split"):
        load_file_dataset(resolve({**base, "val_per_class": 1, "val_list": str(data / "Places_LT_val.txt")}), info)
    with pytest.raises(LtKitError, match="places_lt is long-tailed already"):
        load_file_dataset(resolve({**base, "imbalance_ratio": 10.0}), info)


def test_shot_groups_count_the_training_list_before_the_validation_hold_out(tmp_path, capsys):
    """The published many / medium / few are the full training list's: with val_per_class=2 a class of 101 listed
    images trains on 99 and stays many-shot (> 100), one of 21 stays medium; the losses and priors still see the 99.
    metrics.json, the table footer and a rebuilt cache (`test`) say and do the same."""
    data = inat_tree(tmp_path / "inat", train=(101, 21, 2), test=2)
    info, base = dataset_info("inat2018"), {"dataset": "inat2018", "data_root": str(data), "image_size": 16}
    d = load_file_dataset(resolve({**base, "val_per_class": 2}), info)
    assert [d["train_counts"][c] for c in (0, 5, 8141)] == [99, 19, 2]
    assert [d["group_counts"][c] for c in (0, 5, 8141)] == [101, 21, 2] and sum(d["group_counts"]) == 124
    assert load_file_dataset(resolve(base), info)["group_counts"] is None           # no hold-out: train_counts
    run = tmp_path / "run"
    sets = [*TINY, "image_size=16", "dataset=inat2018", f"data_root={data}", "val_per_class=2", "crt_epochs=1",
            "lws_epochs=1"]
    m = _train([a for s in sets for a in ("--set", s)], run, capsys)
    assert [m["train_counts"][c] for c in (0, 5, 8141)] == [99, 19, 2]
    assert [m["group_counts"][c] for c in (0, 5, 8141)] == [101, 21, 2]
    assert m["thresholds"] == {"many": 100, "few": 20, "held_out": 2}
    for entry in (m["softmax"], m["tde"], m["methods"]["crt"]["rule"]["metrics"]):
        acc = entry["per_class"]
        assert (entry["many"], entry["medium"], entry["few"]) == (acc[0], acc[5], acc[8141])
    footer = "(groups from the training list's counts as published; 2 images per class held out of it for validation"
    assert footer in (run / "log.txt").read_text()
    from lt_kit.training.score import format_test, score_run
    (run / "features.pt").unlink()                   # rebuilt from evaluated.pt with the same groups
    got = score_run(run, alpha=0.0)
    assert json.dumps(got["metrics"], sort_keys=True) == json.dumps(m["softmax"], sort_keys=True)     # NaN too
    assert got["thresholds"] == m["thresholds"] and footer in format_test(got)


# --------------------------------------------------------------------------- errors at start
def test_list_errors_name_the_first_offenders(tmp_path):
    data = places_tree(tmp_path / "places", train=(3, 2, 2), val=1, test=1)
    info, base = dataset_info("places_lt"), {"dataset": "places_lt", "data_root": str(data), "image_size": 16}
    for i in range(2):
        (data / f"train/airfield/{i:08d}.jpg").unlink()
    (data / "train/zen_garden/00000001.jpg").unlink()
    with pytest.raises(LtKitError, match=r"Places_LT_train.txt names 3 image\(s\) missing under .*, e.g. "
                                         r"train/airfield/00000000.jpg, train/airfield/00000001.jpg, "
                                         r"train/zen_garden/00000001.jpg; check data_root"):
        load_file_dataset(resolve(base), info)
    inat = inat_tree(tmp_path / "inat", train=(2, 2, 2), test=1)
    text = (inat / "iNaturalist18_val.txt").read_text().replace(" 8141\n", " 8142\n").replace(" 5\n", " 9000\n")
    (inat / "bad_val.txt").write_text(text)
    with pytest.raises(LtKitError, match=r"label 9000 in the test list .*bad_val.txt is outside 0..8141 \(2 line\(s\): "
                                         r"line 2: 9000, line 3: 8142\)"):
        load_file_dataset(resolve({"dataset": "inat2018", "data_root": str(inat), "image_size": 16,
                                   "test_list": str(inat / "bad_val.txt")}), dataset_info("inat2018"))


def test_cli_label_out_of_range_is_one_line_before_the_run(tmp_path):
    data = places_tree(tmp_path / "places", train=(2, 2, 2), val=1, test=1)
    (data / "Places_LT_train.txt").write_text((data / "Places_LT_train.txt").read_text().replace(" 364\n", " 365\n"))
    err = _cli_error(["--set", "dataset=places_lt", "--set", f"data_root={data}"], tmp_path / "run")
    assert "label 365 in the train list" in err and "outside 0..364" in err


# --------------------------------------------------------------------------- end to end
def test_places_lt_and_inat2018_train_end_to_end(tmp_path, capsys):
    """A tiny fit on each: best epoch on Places-LT's val list, on iNaturalist's split from the training list."""
    places = places_tree(tmp_path / "places", train=(24, 8, 3), val=2, test=2)
    run = tmp_path / "places_run"
    sets = [*TINY, "image_size=16", "dataset=places_lt", f"data_root={places}", "select_best=true",
            "many_threshold=15", "few_threshold=5"]
    m = _train([a for s in sets for a in ("--set", s)], run, capsys)
    assert len(m["train_counts"]) == 365 and m["best_epoch"] in (1, 2) and m["alpha"] == 3.0
    assert (m["softmax"]["many"], m["softmax"]["medium"], m["softmax"]["few"]) == tuple(
        m["softmax"]["per_class"][c] for c in (0, 1, 364))
    assert not (run / "val_indices.npy").exists()

    inat = inat_tree(tmp_path / "inat", train=(24, 8, 2), test=2)
    run = tmp_path / "inat_run"
    sets = [*TINY, "image_size=16", "dataset=inat2018", f"data_root={inat}", "val_per_class=2", "select_best=true"]
    m = _train([a for s in sets for a in ("--set", s)], run, capsys)
    assert (m["train_counts"][0], m["train_counts"][5], m["train_counts"][8141]) == (22, 6, 2)
    val = np.load(run / "val_indices.npy")
    assert len(val) == 4 and not set(val) & set(np.load(run / "subset_indices.npy"))
    hist = json.loads((run / "history.json").read_text())
    assert all("val_acc" in h for h in hist)
