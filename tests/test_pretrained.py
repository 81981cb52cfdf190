"""Pretrained backbones with no network: torchvision names through the weights API with the fetch replaced by a
state dict the test saved, local files with their key mapping, a fake timm, the mismatch errors, and a frozen
backbone that stays bit-identical (BatchNorm statistics included) through ``fit`` while TDE and the post-hoc
methods still run."""
from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision
from test_imagefiles import _cli_error

import lt_kit.pretrained as P
from lt_kit.config import load_params_file, resolve
from lt_kit.data.datasets import dataset_info
from lt_kit.data.imagefiles import preprocess
from lt_kit.errors import LtKitError
from lt_kit.models import LTModel
from lt_kit.training.build import build_model
from lt_kit.training.fit import fit

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")    # conftest.py: tiny models, one thread


def _saved_resnet50(tmp_path) -> Path:
    """torchvision's own ResNet-50 (random, seeded) saved as its state dict: torchvision's key names, fc included."""
    torch.manual_seed(1)
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_a_torchvision_name_loads_through_the_weights_api(tmp_path, monkeypatch):
    file = _saved_resnet50(tmp_path)
    asked = []

    def fetch(weights):                 # the one step that would read the hub cache or download
        asked.append(weights)
        return torch.load(file, map_location="cpu", weights_only=True)
    monkeypatch.setattr(P, "_torchvision_state_dict", fetch)
    params = resolve({"dataset": "places_lt", "arch": "resnet50", "pretrained": "torchvision:IMAGENET1K_V2"})
    model = build_model(params, 365)
    head = model.head.weight.detach().clone()
    record = P.load_pretrained(model, params)
    assert asked == [torchvision.models.ResNet50_Weights.IMAGENET1K_V2]
    want = torch.load(file, weights_only=True)
    got = model.backbone.state_dict()
    assert torch.equal(got["body.0.weight"], want["conv1.weight"])
    assert torch.equal(got["body.7.2.bn3.running_var"], want["layer4.2.bn3.running_var"])
    assert torch.equal(model.head.weight, head) and model.head.weight.shape == (365, 2048)    # the head is new
    assert record["dropped"] == ["fc.bias", "fc.weight"] and "conv1.* -> body.0.*" in record["renamed"]
    assert record["url"].startswith("https://download.pytorch.org/") and record["keys"] == len(got)
    assert record["sha256"] == P.weights_checksum(got)
    assert "(the classifier is always new)" in P.describe(record)
    # the weights' input preset: V2 is evaluated at 224 after a 232 resize, with ImageNet's normalisation
    pre = preprocess(params, dataset_info("places_lt"), P.preset(params))
    assert (pre.size, pre.resize, pre.mean) == (224, 232, (0.485, 0.456, 0.406))
    pre = preprocess({**params, "image_size": 112}, dataset_info("places_lt"), P.preset(params))
    assert (pre.size, pre.resize) == (112, 116)


def test_a_local_file_maps_its_keys_and_is_recorded(tmp_path):
    torch.manual_seed(0)
    source = LTModel("resnet32", 10)
    for name, state in (("lt_kit_model.pt", source.state_dict()),            # a whole lt_kit model
                        ("dp.pth", {f"module.{k}": v for k, v in source.backbone.state_dict().items()}),
                        ("ddp_model.pt", {f"module.{k}": v for k, v in source.state_dict().items()}),  # DDP-wrapped
                        ("dp.pth", {f"module.{k}": v for k, v in source.backbone.state_dict().items()})):
        torch.save(state, tmp_path / name)
        params = resolve({"pretrained": str(tmp_path / name)})
        model = build_model(params, 7)
        record = P.load_pretrained(model, params)
        for k, v in source.backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[k], v), k
        assert record["file_sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert record["sha256"] == P.weights_checksum(source.backbone.state_dict())
    assert record["renamed"] == ["module.* -> *"] and record["dropped"] == []
    assert P.preset(params) is None              # a file carries no preset: the data set's own input applies


def test_mismatches_and_missing_sources_are_one_clear_error(tmp_path, monkeypatch):
    small = tmp_path / "resnet32.pth"
    torch.save(LTModel("resnet32", 10).backbone.state_dict(), small)
    params = resolve({"arch": "resnet50", "pretrained": str(small)})
    with pytest.raises(LtKitError, match=r"pretrained .*resnet32.pth does not fit arch 'resnet50': \d+ backbone "
                                         r"key\(s\) missing .*unexpected key\(s\) .*shape\(s\) differ \(body.0.weight "
                                         r"\(16, 3, 3, 3\) in the weights vs \(64, 3, 7, 7\).*set arch"):
        P.load_pretrained(build_model(params, 10), params)
    state = LTModel("resnet32", 10).backbone.state_dict()
    state["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    torch.save(state, tmp_path / "shape.pth")
    params = resolve({"pretrained": str(tmp_path / "shape.pth")})
    with pytest.raises(LtKitError, match=r"1 shape\(s\) differ \(conv1.weight \(16, 3, 5, 5\) in the weights vs "
                                         r"\(16, 3, 3, 3\)\)"):
        P.load_pretrained(build_model(params, 10), params)
    torch.save([1, 2], tmp_path / "list.pt")
    for name, match in (("list.pt", "does not hold a state dict"), ("nowhere.pth", "weights file .* not found")):
        params = resolve({"pretrained": str(tmp_path / name)})
        with pytest.raises(LtKitError, match=match):
            P.load_pretrained(build_model(params, 10), params)

    import torchvision.models._api as api

    def offline(*a, **k):                                        # no network: one line that says what to do
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    params = resolve({"arch": "resnet50", "pretrained": "torchvision:IMAGENET1K_V1"})
    with pytest.raises(LtKitError, match=r"could not fetch torchvision weights ResNet50_Weights.IMAGENET1K_V1 "
                                         r"\(.*name resolution.*put resnet50-0676ba61.pth in torch's hub cache"):
        P.load_pretrained(build_model(params, 10), params)

    for bad, match in ((dict(pretrained="imagenet"), "not a weights source; valid forms"),
                       (dict(arch="resnet50", pretrained="torchvision:ResNet152_Weights.IMAGENET1K_V1"),
                        "are for arch 'resnet152', but arch is 'resnet50'"),
                       (dict(arch="resnet152", pretrained="torchvision:V9"), "valid: IMAGENET1K_V1, IMAGENET1K_V2"),
                       (dict(pretrained="torchvision"), "not 'resnet32'"),
                       (dict(freeze_backbone=True), "freeze_backbone=true .* no pretrained weights")):
        with pytest.raises(LtKitError, match=match):
            resolve(bad)
    monkeypatch.setitem(sys.modules, "timm", None)              # timm not installed (import fails)
    P._timm_cfg.cache_clear()
    params = resolve({"arch": "resnet50", "pretrained": "timm:resnet50.a1_in1k"})
    with pytest.raises(LtKitError, match="needs timm, which is not installed"):
        P.load_pretrained(build_model(params, 10), params)


def test_timm_by_name_when_installed(tmp_path, monkeypatch):
    """A stand-in timm module: its ResNet keys are torchvision's; its pretrained_cfg gives the preset."""
    torch.manual_seed(2)
    net = torchvision.models.resnet50(weights=None)
    net.pretrained_cfg = {"input_size": (3, 160, 160), "crop_pct": 0.95, "mean": (0.5, 0.5, 0.5), "std": (0.5,) * 3}
    asked = []                                  # create_model's pretrained argument, call by call
    fake = types.SimpleNamespace(create_model=lambda name, pretrained: asked.append(pretrained) or net)
    monkeypatch.setitem(sys.modules, "timm", fake)
    P._timm_cfg.cache_clear()
    params = resolve({"arch": "resnet50", "pretrained": "timm:resnet50.a1_in1k"})
    assert P.preset(params) == {"crop": 160, "resize": 168, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert asked == [False]                     # the preset fetches no weights (a run scores offline)
    model = build_model(params, 10)
    record = P.load_pretrained(model, params)
    assert asked == [False, True]
    assert torch.equal(model.backbone.state_dict()["body.4.0.conv1.weight"], net.layer1[0].conv1.weight)
    assert record["kind"] == "timm" and record["dropped"] == ["fc.bias", "fc.weight"]
    P._timm_cfg.cache_clear()


def test_a_frozen_backbone_stays_bit_identical_through_fit(tmp_path):
    """freeze_backbone: only the head trains; BatchNorm is in eval mode, so its running statistics stay too. The
    direction is still learnt, TDE and the post-hoc methods are scored, and the run records the weights."""
    torch.manual_seed(0)
    donor = LTModel("resnet32", 10)
    donor.train()
    with torch.no_grad():                       # non-trivial BatchNorm statistics, so a change would show
        for _ in range(3):
            donor(torch.randn(8, 3, 16, 16) * 2 + 0.5)
    file = tmp_path / "backbone.pth"
    torch.save(donor.backbone.state_dict(), file)
    before = {k: v.clone() for k, v in donor.backbone.state_dict().items()}
    params = resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), "epochs": 2, "pretrained": str(file),
                      "freeze_backbone": True, "device": "cpu", "val_per_class": 10, "max_per_class": 100})
    run = tmp_path / "run"
    m = fit(params, run, progress=False)
    for name in ("checkpoint.pt", "evaluated.pt"):
        state = torch.load(run / name, weights_only=True)["model"]
        for k, v in before.items():
            assert torch.equal(state[f"backbone.{k}"], v), (name, k)
        assert state["direction"].abs().sum() > 0                      # the direction still moves
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == 1       # the head's weight alone
    assert "tde" in m and m["alpha"] == params["alpha"]
    assert {"logit_adjust", "crt", "lws"} <= set(m["methods"])
    record = json.loads((run / "pretrained.json").read_text())
    assert record["source"] == str(file) and record["sha256"] == P.weights_checksum(before)
    assert record["file_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert "pretrained " in (run / "log.txt").read_text()
    model = build_model(params, 10)
    model.train()
    assert model.training and not model.backbone.training           # frozen means eval-mode BatchNorm


def test_cli_weights_that_do_not_fit_are_one_line_before_the_run(tmp_path):
    torch.save(LTModel("resnet32", 10).backbone.state_dict(), tmp_path / "r32.pth")
    err = _cli_error(["--params", "smoke", "--set", "arch=resnext50_32x4d", "--set", f"pretrained={tmp_path}/r32.pth"],
                     tmp_path / "run")
    assert "does not fit arch 'resnext50_32x4d'" in err and "missing" in err
