import re
from pathlib import Path

import pytest

from lt_kit.config import DEFAULTS, PARAMS, load_params_file, parse_sets, resolve
from lt_kit.errors import LtKitError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "params").glob("*.yaml"))


def test_defaults_are_the_reference_cifar10_recipe():
    p = resolve({"dataset": "cifar10_lt"})
    assert (p["arch"], p["epochs"], p["batch_size"], p["lr"], p["weight_decay"], p["milestones"], p["alpha"],
            p["imbalance_ratio"], p["mu"]) == ("resnet32", 200, 256, 0.2, 5e-4, [120, 160], 1.0, 100.0, 0.9)


def test_dataset_recipe_fills_unset_keys_but_not_set_ones():
    assert resolve({"dataset": "cifar100_lt"})["alpha"] == 1.5
    assert resolve({"dataset": "cifar100_lt", "alpha": 0.5})["alpha"] == 0.5
    assert resolve({"dataset": "cifar100_lt", "alpha": None})["alpha"] == 1.5      # None = not set
    im = resolve({"dataset": "imagenet_lt"})
    assert (im["arch"], im["batch_size"], im["schedule"], im["mu_schedule"], im["alpha"]) == \
        ("resnext50_32x4d", 512, "cosine", "lr_scaled", 3.0)


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(LtKitError) as e:
        resolve({"epoch": 3})
    msg = str(e.value)
    assert "unknown parameter 'epoch'" in msg and "did you mean 'epochs'" in msg and "valid keys:" in msg
    assert all(k in msg for k in PARAMS)


@pytest.mark.parametrize("key,value,match", [("epochs", "ten", "must be int"), ("epochs", 2.5, "must be int"),
                                             ("download", 1, "must be bool"), ("milestones", [1.5], "list of ints"),
                                             ("dataset", "mnist_lt", "must be one of"),
                                             ("arch", "vgg", "unknown arch"), ("imbalance_ratio", 0.5, ">= 1"),
                                             ("alpha", float("nan"), "finite"), ("epochs", 0, ">= 1")])
def test_bad_values_are_refused(key, value, match):
    with pytest.raises(LtKitError, match=match):
        resolve({key: value})


def test_set_parsing_types_values():
    got = parse_sets(["lr=1e-3", "download=true", "milestones=[3, 4]", "dataset=cifar10_lt", "alpha=2"])
    assert got == {"lr": 0.001, "download": True, "milestones": [3, 4], "dataset": "cifar10_lt", "alpha": 2.0}
    with pytest.raises(LtKitError, match="key=value"):
        parse_sets(["lr"])


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_is_valid(path):
    p = resolve(load_params_file(path))
    assert set(p) == set(DEFAULTS)


def test_presets_cover_the_reference_configs():
    names = {p.stem for p in PRESETS}
    assert {"cifar10_lt_resnet32", "cifar100_lt_resnet32", "cifar10_lt_resnext50", "cifar100_lt_resnext50",
            "imagenet_lt_resnext50", "digits_lt", "smoke"} <= names


def test_params_file_with_unknown_key(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("dataset: digits_lt\nlearning_rate: 0.1\n")
    with pytest.raises(LtKitError, match=r"unknown parameter 'learning_rate' in .*x.yaml.*valid keys"):
        load_params_file(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(LtKitError, match="flat mapping"):
        load_params_file(f)


def test_parameters_page_lists_every_parameter():
    """docs/parameters.md promises every parameter, each a table row with its type and default."""
    page = (ROOT / "docs" / "parameters.md").read_text()
    rows = {key: m.group(2) for m in re.finditer(r"^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|", page, re.M)
            for key in re.findall(r"`(\w+)`", m.group(1))}
    assert sorted(set(PARAMS) - set(rows)) == []
    for key, (_default, typ, _help) in PARAMS.items():
        assert typ.__name__ in rows[key], (key, rows[key])
