"""Pretrained backbones (``pretrained``): where the weights come from, how their key names map onto lt_kit's
backbone, the input preset they were trained with, and the record a run keeps of them.

Sources (``pretrained: SOURCE``):
- ``torchvision`` / ``torchvision:NAME`` / ``torchvision:Enum.NAME``: torchvision's weights for the run's ``arch``
  (resnet50, resnet152, resnext50_32x4d) through its weights API, which reads the user's torch hub cache or
  downloads; NAME is a member of the arch's weights enum (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT``);
- a path ending in ``.pt`` / ``.pth``: a state dict (or a dict holding one under ``state_dict`` or ``model``);
- ``timm:NAME``: a timm model's pretrained weights when timm is installed (ResNet-family names, whose keys are
  torchvision's).

The classifier is always new: classifier keys in the weights are dropped and reported. Nothing here touches a
device; files are read with ``map_location="cpu", weights_only=True``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from lt_kit.errors import LtKitError

TORCHVISION_WEIGHTS = {"resnet50": "ResNet50_Weights", "resnet152": "ResNet152_Weights",
                       "resnext50_32x4d": "ResNeXt50_32X4D_Weights"}
FORMS = "'' (none), torchvision, torchvision:NAME (e.g. IMAGENET1K_V1), a .pt/.pth file, timm:NAME"
WRAPPERS = ("module.", "_orig_mod.")               # DataParallel / DDP and torch.compile prefixes
CLASSIFIER = ("fc.", "head.", "classifier.", "direction")


@dataclass(frozen=True)
class Source:
    kind: str        # "torchvision", "file" or "timm"
    name: str        # the weights' name, the file path or the timm model name


def parse_source(text: str) -> Source | None:
    """``pretrained``'s value -> a Source (None for ''); an unknown form is an error listing the valid ones."""
    text = text.strip()
    if not text:
        return None
    if text == "torchvision" or text.startswith("torchvision:"):
        return Source("torchvision", text.partition(":")[2] or "DEFAULT")
    if text.startswith("timm:") and text[5:]:
        return Source("timm", text[5:])
    if text.lower().endswith((".pt", ".pth")):
        return Source("file", text)
    raise LtKitError(f"pretrained {text!r} is not a weights source; valid forms: {FORMS}")


def torchvision_weights(name: str, arch: str):
    """The member of ``arch``'s torchvision weights enum called ``name`` (no download: an enum lookup)."""
    import torchvision.models as tvm
    if arch not in TORCHVISION_WEIGHTS:
        raise LtKitError(f"torchvision weights exist here for arch {', '.join(TORCHVISION_WEIGHTS)}, not {arch!r}; "
                         "set arch to one of them, or give a .pt/.pth file saved from your own model")
    enum_name = TORCHVISION_WEIGHTS[arch]
    enum = getattr(tvm, enum_name)
    cls, dot, member = name.rpartition(".")
    if dot and cls != enum_name:
        other = next((a for a, e in TORCHVISION_WEIGHTS.items() if e == cls), None)
        if other:
            raise LtKitError(f"pretrained weights {name} are for arch {other!r}, but arch is {arch!r}; set "
                             f"arch={other} or use {enum_name}.NAME")
        raise LtKitError(f"unknown torchvision weights {name!r}; for arch {arch!r} use {enum_name}.NAME, NAME one "
                         f"of {', '.join(enum.__members__)}")
    if member not in enum.__members__:
        raise LtKitError(f"torchvision has no {enum_name}.{member}; valid: {', '.join(enum.__members__)}")
    return enum[member]


def check(params: dict) -> None:
    """``config.resolve``'s checks of ``pretrained`` and ``freeze_backbone`` (no file read, no download)."""
    src = parse_source(params["pretrained"])
    if src is not None and src.kind == "torchvision":
        torchvision_weights(src.name, params["arch"])
    if params["freeze_backbone"] and src is None:
        raise LtKitError("freeze_backbone=true trains the head on fixed features, but no pretrained weights are "
                         "given (a random backbone's features); set pretrained to torchvision, torchvision:NAME, a "
                         ".pt/.pth file or timm:NAME")


# --------------------------------------------------------------------------- input preset
def preset(params: dict) -> dict | None:
    """The input the weights were trained with: ``{"crop", "resize", "mean", "std"}``, or None (no weights, or a
    file, which carries no preset: the data set's own size and normalisation apply)."""
    src = parse_source(params.get("pretrained") or "")      # a run from before this parameter: none
    if src is None or src.kind == "file":
        return None
    if src.kind == "torchvision":
        t = torchvision_weights(src.name, params["arch"]).transforms()
        return {"crop": int(t.crop_size[0]), "resize": int(t.resize_size[0]), "mean": tuple(t.mean),
                "std": tuple(t.std)}
    cfg = _timm_cfg(src.name)
    crop = int(cfg.get("input_size", (3, 224, 224))[-1])
    return {"crop": crop, "resize": int(round(crop / float(cfg.get("crop_pct", 0.875)))),
            "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))), "std": tuple(cfg.get("std", (0.229, 0.224, 0.225)))}


# --------------------------------------------------------------------------- fetching
def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _torchvision_state_dict(weights) -> dict:
    """torchvision's weights API: the user's torch hub cache, else a download (its hash checked)."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as e:               # no network, a proxy, a full disk
        raise LtKitError(f"could not fetch torchvision weights {weights} ({_first_line(e)}); without a network, put "
                         f"{Path(weights.url).name} in torch's hub cache (checkpoints/ under torch.hub.get_dir()), or "
                         "give its path as pretrained=FILE.pth") from None


def _timm_model(name: str, pretrained: bool = True):
    try:
        import timm
    except ImportError:
        raise LtKitError(f"pretrained=timm:{name} needs timm, which is not installed; pip install timm, or save the "
                         "model's state_dict() to a .pth file and give its path") from None
    try:
        return timm.create_model(name, pretrained=pretrained)
    except Exception as e:
        raise LtKitError(f"timm could not create {name!r}{' with pretrained weights' * pretrained} "
                         f"({_first_line(e)})") from None


@lru_cache(maxsize=8)
def _timm_cfg(name: str) -> dict:
    """The input settings timm records for ``name``'s weights, read from the model built without them (no
    download: scoring or resuming a run offline builds its data from this)."""
    return dict(getattr(_timm_model(name, pretrained=False), "pretrained_cfg", None) or {})


def _read_file(path: Path) -> tuple[dict, str]:
    """A state dict from a local file, and the file's sha256."""
    if not path.is_file():
        raise LtKitError(f"pretrained weights file {path} not found; give the path of a .pt/.pth state dict")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LtKitError(f"{path} is not a state dict torch can read safely (weights_only: {_first_line(e)}); save "
                         "the model's state_dict() with torch.save") from None
    for key in ("state_dict", "model"):                # a training checkpoint (an lt_kit one holds "model")
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LtKitError(f"{path} does not hold a state dict (a mapping of names to tensors); save the model's "
                         "state_dict() with torch.save")
    return obj, digest.hexdigest()


# --------------------------------------------------------------------------- key mapping and loading
def _strip_wrappers(state: dict, renamed: list, where: str = "") -> dict:
    """``state`` without a DataParallel/DDP or torch.compile prefix shared by every key (noted in ``renamed``)."""
    for prefix in WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            renamed.append(f"{where}{prefix}* -> *")
    return state


def map_keys(state: dict, backbone: torch.nn.Module) -> tuple[dict, dict]:
    """Rename ``state``'s keys onto ``backbone``'s: an lt_kit model's ``backbone.`` part, wrapper prefixes
    stripped, classifier keys dropped, torchvision/timm names renamed by ``backbone.KEY_MAP``. Returns the
    mapped state and a report ``{"renamed": [...], "dropped": [...]}``."""
    want = backbone.state_dict()
    renamed, dropped = [], []
    state = _strip_wrappers(state, renamed)                     # first: module.backbone.* is lt_kit's
    if any(k.startswith("backbone.") for k in state):           # a whole lt_kit model: keep its backbone
        dropped += sorted(k for k in state if not k.startswith("backbone."))
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        renamed.append("backbone.* -> *")
        state = _strip_wrappers(state, renamed, "backbone.")    # its backbone compiled on its own
    dropped += sorted(k for k in state if k.startswith(CLASSIFIER) and k not in want)
    state = {k: v for k, v in state.items() if k not in dropped}
    key_map = getattr(backbone, "KEY_MAP", {})
    if key_map and not set(state) & set(want):
        out = {}
        for k, v in state.items():
            old = next((p for p in key_map if k.startswith(p)), None)
            out[key_map[old] + k[len(old):] if old else k] = v
            if old and f"{old}* -> {key_map[old]}*" not in renamed:
                renamed.append(f"{old}* -> {key_map[old]}*")
        state = out
    return state, {"renamed": renamed, "dropped": dropped}


def _fit_check(state: dict, backbone: torch.nn.Module, what: str, arch: str) -> dict:
    """Missing, unexpected and wrongly shaped keys as one error; BatchNorm's ``num_batches_tracked``, which
    weights saved before PyTorch 0.4 lack, is filled with 0 as ``load_state_dict`` itself does."""
    want = backbone.state_dict()
    state = {**{k: torch.zeros_like(v) for k, v in want.items()
                if k.endswith("num_batches_tracked") and k not in state}, **state}
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} in the weights vs {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        def few(xs):
            return ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")
        parts = ([f"{len(missing)} backbone key(s) missing ({few(missing)})"] if missing else []) + \
            ([f"{len(extra)} unexpected key(s) ({few(extra)})"] if extra else []) + \
            ([f"{len(shapes)} shape(s) differ ({few(shapes)})"] if shapes else [])
        raise LtKitError(f"pretrained {what} does not fit arch {arch!r}: {'; '.join(parts)}; are they weights for "
                         "another architecture? set arch to theirs")
    return state


def weights_checksum(state: dict) -> str:
    """sha256 of a state dict's content: each key (sorted), its dtype, its shape and its bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_pretrained(model, params: dict) -> dict | None:
    """Load ``params["pretrained"]`` into ``model.backbone`` (the head stays new); returns the run's record of it
    (source, checksum, key mapping), or None without weights."""
    src = parse_source(params.get("pretrained") or "")
    if src is None:
        return None
    record = {"source": params["pretrained"], "kind": src.kind}
    if src.kind == "file":
        state, record["file_sha256"] = _read_file(Path(src.name).expanduser())
    elif src.kind == "torchvision":
        weights = torchvision_weights(src.name, params["arch"])
        record.update(weights=str(weights), url=weights.url)
        state = _torchvision_state_dict(weights)
    else:
        state = _timm_model(src.name).state_dict()
    state, report = map_keys(dict(state), model.backbone)
    state = _fit_check(state, model.backbone, params["pretrained"], params["arch"])
    model.backbone.load_state_dict(state, strict=True)
    record.update(sha256=weights_checksum(model.backbone.state_dict()), keys=len(state), **report)
    return record


def describe(record: dict) -> str:
    """One log line: what was loaded and how its keys were mapped."""
    mapping = ", ".join(record["renamed"]) or "names as they are"
    dropped = f"; dropped {', '.join(record['dropped'][:6])}{' ...' if len(record['dropped']) > 6 else ''} " \
              "(the classifier is always new)" if record["dropped"] else ""
    return (f"pretrained {record['source']}: {record['keys']} backbone tensors, keys {mapping}{dropped}; "
            f"sha256 {record['sha256'][:16]}")
