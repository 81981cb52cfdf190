"""Every parameter, its default, its type and its help, in one place; strict validation of overrides.

Defaults are the reference's CIFAR-10-LT ResNet-32 recipe. A data set's own reference settings
(``data.DATASETS[...].recipe``) replace a default the user did not set; ``None`` means "not set", so a
notebook's parameters cell can leave recipe keys at ``None``. ``params/*.yaml`` and ``--set key=value`` are
checked against this table: an unknown key or a wrong type is an error that lists the valid keys.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from lt_kit.data.datasets import DATASETS
from lt_kit.errors import LtKitError
from lt_kit.maths.strength import check_alpha

# name: (default, type, help). Types: bool, int, float, str, list (of ints).
PARAMS: dict[str, tuple[Any, type, str]] = {
    # data
    "dataset": ("digits_lt", str, f"one of: {', '.join(DATASETS)}"),
    "data_root": ("data", str, "folder holding the data set (torchvision layout for CIFAR; image root otherwise)"),
    "download": (False, bool, "fetch CIFAR through torchvision if data_root lacks it"),
    "imbalance_ratio": (100.0, float, "largest / smallest class size of the training split (>= 1)"),
    "max_per_class": (0, int, "images in the head class; 0 = as many as every class has (CIFAR/digits: all of "
                              "the largest class; folder: the smallest class's size)"),
    "subset_seed": (0, int, "seed of the long-tailed subset and of the val split (0 = LDAM/BBN's subset)"),
    "val_per_class": (0, int, "images per class held out first from the training pool (CIFAR/digits) or training "
                              "list (list data sets, instead of a val list) as a balanced validation split (0 = none, "
                              "the reference; 50 leaves CIFAR's head class 4,950; a list class with this many images "
                              "or fewer gives none)"),
    "val_root": ("", str, "folder: class-per-subfolder balanced validation images ('' = no val split)"),
    "train_list": ("", str, "imagenet_lt, inat2018, places_lt: train list file ('' = the data set's list in "
                            "data_root, e.g. ImageNet_LT_train.txt)"),
    "val_list": ("", str, "list data sets: val list file, used to pick the best epoch (inat2018 has none: use "
                          "val_per_class)"),
    "test_list": ("", str, "list data sets: test list file (inat2018: iNaturalist18_val.txt, the reported set)"),
    "test_root": ("", str, "folder: class-per-subfolder balanced test images"),
    "image_size": (0, int, "image-file data sets: crop size in pixels; 0 = the data set's default"),
    "num_workers": (4, int, "DataLoader workers for image-file data sets"),
    # model
    "arch": ("resnet32", str, "backbone: resnet32, resnet50, resnet152, resnext50_32x4d"),
    "pretrained": ("", str, "backbone weights ('' = none): torchvision or torchvision:NAME (the arch's weights, e.g. "
                            "IMAGENET1K_V1), a .pt/.pth state dict, or timm:NAME; the classifier is always new"),
    "freeze_backbone": (False, bool, "train the head only on the pretrained backbone's fixed features (BatchNorm in "
                                     "eval mode); needs pretrained"),
    "head": ("causal_norm", str, "causal_norm (De-confound), linear (softmax baseline, bias-free) or norm_linear "
                                 "(LDAM's cosine classifier); see methods.py"),
    "num_heads": (2, int, "K: heads of the causal-norm classifier"),
    "tau": (16.0, float, "causal-norm head: the logit scale tau of Eq. 7 (16 in the paper)"),
    "gamma": (0.03125, float, "gamma: the causal norm's class-agnostic term, ||w|| + gamma"),
    "norm_scale": (30.0, float, "norm_linear head (LDAM's normalised classifier): logit scale s"),
    "loss": ("ce", str, "training loss: ce, logit_adjusted (tau=1: Balanced Softmax), ldam_drw (norm_linear head)"),
    "loss_tau": (1.0, float, "logit_adjusted loss: tau of the log-prior shift (1 = Balanced Softmax)"),
    "ldam_max_margin": (0.5, float, "ldam_drw: the largest class margin (LDAM: 0.5)"),
    "drw_beta": (0.9999, float, "ldam_drw: beta of the deferred class-balanced weights, from the first lr drop"),
    "alpha": (1.0, float, "TDE strength at test time (0 = De-confound, no TDE)"),
    "mu": (0.9, float, "momentum of the direction d <- mu*d + batch-mean feature"),
    "mu_schedule": ("fixed", str, "fixed (CIFAR) or lr_scaled (ImageNet-LT: mu = 1 - 0.1*min(50*lr, 1))"),
    # optimisation
    "epochs": (200, int, "training epochs"),
    "batch_size": (256, int, "global batch size, images per step"),
    "lr": (0.2, float, "peak learning rate (SGD)"),
    "momentum": (0.9, float, "SGD momentum"),
    "weight_decay": (5e-4, float, "SGD weight decay, on every parameter"),
    "schedule": ("warmup_multistep", str, "warmup_multistep or cosine (stepped once per epoch)"),
    "warmup_epochs": (5, int, "linear warm-up epochs (warmup_multistep)"),
    "milestones": ([120, 160], list, "epochs at which lr is multiplied by lr_factor (warmup_multistep)"),
    "lr_factor": (0.01, float, "lr multiplier at each milestone"),
    "select_best": (False, bool, "keep the epoch best on the validation split (needs one); else the last epoch"),
    "eval_every": (0, int, "score the validation split every N epochs (needs one; 0 = only after training)"),
    # the modern recipe's switches (augment.py), all off in the reference recipe
    "augment": ("none", str, "per-image policy after crop + flip: none (the reference), autoaugment (CIFAR-10 "
                             "policy) or randaugment (tensor data sets)"),
    "randaugment_ops": (2, int, "randaugment: operations per image (N)"),
    "randaugment_magnitude": (9, int, "randaugment: magnitude bin M of torchvision's 31 (0-30)"),
    "cutout": (0, int, "Cutout: side in pixels of one black square per image (0 = off; 16 for CIFAR; tensor data "
                       "sets)"),
    "mixup_alpha": (0.0, float, "mixup: Beta(alpha, alpha) mixing of each batch (0 = off; the direction then sees "
                                "mixed features)"),
    "cutmix_alpha": (0.0, float, "CutMix: Beta(alpha, alpha) box area (0 = off; with mixup on, each batch picks one)"),
    "label_smoothing": (0.0, float, "label smoothing of the training loss (0 = off)"),
    "sam_rho": (0.0, float, "SAM: radius of the sharpness-aware step (0 = off; DDC and GLMC use 0.05); two "
                            "forward + backward passes per step"),
    # decoupled classifiers on the training-feature cache (maths/decoupled.py; Kang et al.'s configs by default)
    "train_feature_passes": (1, int, "passes over the training subset cached for cRT/LWS (train_features.pt, N x D "
                                     "floats per pass): 1 = the images as they are (test transform); K > 1 = K passes "
                                     "with the training crop and flip; 0 = no cache, no cRT/LWS at the end of fit"),
    "crt_epochs": (10, int, "cRT: epochs of classifier re-training on cached features (Kang et al.: 10)"),
    "crt_lr": (0.2, float, "cRT: peak lr, cosine to 0 (Kang et al.: 0.2 at batch 512)"),
    "crt_batch_size": (512, int, "cRT: class-balanced batch size (Kang et al.: 512)"),
    "crt_weight_decay": (5e-4, float, "cRT: SGD weight decay (Kang et al.: 5e-4; 1e-4 on iNaturalist)"),
    "lws_epochs": (5, int, "LWS: epochs of learning the per-class scales (Kang et al.: 5)"),
    "lws_lr": (0.2, float, "LWS: peak lr, cosine to 0 (Kang et al.: 0.2 at batch 512)"),
    "lws_batch_size": (512, int, "LWS: class-balanced batch size (Kang et al.: 512)"),
    "lws_weight_decay": (5e-4, float, "LWS: SGD weight decay on the scales (Kang et al.: 5e-4; 1e-4 on iNaturalist)"),
    # evaluation
    "many_threshold": (100, int, "many-shot: more than this many training images"),
    "few_threshold": (20, int, "few-shot: fewer than this many training images"),
    # execution
    "seed": (0, int, "seed of initialisation, shuffling and augmentation"),
    "device": ("auto", str, "auto (cuda if present, else cpu), cpu, cuda, cuda:N, mps"),
    "channels_last": (True, bool, "channels-last memory format for the model and batches (faster convolutions on "
                                  "CPUs and GPUs; docs/performance.md)"),
    "bf16": ("auto", bool, "bfloat16 autocast of the backbone for training and feature extraction (head, features "
                           "and direction stay float32): auto (the default: on for a CPU with native bf16, where it "
                           "trains 1.5-2x faster and held accuracy over two 200-epoch seed pairs; float32 on CUDA "
                           "and elsewhere), true, or false (float32 everywhere); docs/performance.md"),
    "compile": (False, bool, "torch.compile the backbone"),
    "fast_step": (False, bool, "the whole training step as one function on static buffers (fused SGD, no host sync "
                               "in an epoch), captured as a CUDA graph on CUDA (training/fast_step.py); tensor data "
                               "sets, one process, no mixup/cutmix/augment/cutout"),
    "cudnn_benchmark": (True, bool, "let cuDNN pick the fastest convolution algorithms"),
    "sync_bn": (False, bool, "SyncBatchNorm across processes under torchrun"),
}
DEFAULTS: dict[str, Any] = {k: v[0] for k, v in PARAMS.items()}
AUTO = {"bf16"}                  # bool parameters that also take "auto" (resolved per device when a run starts)
CHOICES = {"dataset": list(DATASETS), "mu_schedule": ["fixed", "lr_scaled"],
           "augment": ["none", "autoaugment", "randaugment"],
           "schedule": ["warmup_multistep", "cosine"]}


def choices(key: str) -> list[str] | None:
    """The valid values of ``key``; heads and losses come from their registries (imported late: torch)."""
    if key == "head":
        from lt_kit.models import HEADS
        return list(HEADS)
    if key == "loss":
        from lt_kit.methods import LOSSES
        return list(LOSSES)
    return CHOICES.get(key)


def _unknown(key: str, where: str) -> LtKitError:
    near = difflib.get_close_matches(key, PARAMS, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return LtKitError(f"unknown parameter {key!r}{where}{hint}; valid keys: {', '.join(PARAMS)}")


def coerce(key: str, value: Any, where: str = "") -> Any:
    """Check ``value`` against the type of ``key``; strings (from ``--set``) are parsed as YAML first."""
    if key not in PARAMS:
        raise _unknown(key, where)
    typ = PARAMS[key][1]
    if isinstance(value, str) and typ is not str:
        try:
            value = float(value) if typ is float else yaml.safe_load(value)
        except (ValueError, yaml.YAMLError):
            pass
    if key in AUTO and value == "auto":
        return value
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple))
          and all(isinstance(i, int) and not isinstance(i, bool) for i in v)}[typ]
    if not ok(value):
        raise LtKitError(f"parameter {key!r}{where} must be {typ.__name__}{' or auto' if key in AUTO else ''}"
                         f"{' of ints' if typ is list else ''}, got {value!r} ({type(value).__name__})")
    value = float(value) if typ is float else list(value) if typ is list else value
    valid = choices(key)
    if valid is not None and value not in valid:
        raise LtKitError(f"parameter {key!r}{where} must be one of {', '.join(valid)}, got {value!r}")
    return value


def resolve(overrides: dict[str, Any] | None = None, where: str = "") -> dict[str, Any]:
    """Defaults, then the data set's recipe, then every override that is not ``None``; all validated."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for k in overrides:
        if k not in PARAMS:
            raise _unknown(k, where)
    dataset = coerce("dataset", overrides.get("dataset", DEFAULTS["dataset"]), where)
    params = {**DEFAULTS, **DATASETS[dataset].recipe, **overrides}
    params = {k: coerce(k, v, where) for k, v in params.items()}
    from lt_kit.models import list_backbones  # late: models imports torch, config stays light
    if params["arch"] not in list_backbones():
        raise LtKitError(f"unknown arch {params['arch']!r}{where}; valid: {', '.join(list_backbones())}")
    if params["imbalance_ratio"] < 1:
        raise LtKitError(f"imbalance_ratio must be >= 1 (largest/smallest class), got {params['imbalance_ratio']}")
    try:
        check_alpha(params["alpha"])
    except ValueError as e:
        raise LtKitError(str(e)) from None
    from lt_kit.methods import check_loss
    check_loss(params)
    if params["val_per_class"] < 0:
        raise LtKitError(f"val_per_class must be >= 0, got {params['val_per_class']}")
    if params["select_best"] or params["eval_every"]:
        check_val_split(params)
    check_recipe(params)
    from lt_kit.pretrained import check as check_pretrained
    check_pretrained(params)
    if params["fast_step"]:
        why = fast_step_blockers(params, _torchrun_world_size())
        if why:
            raise LtKitError(f"fast_step=true cannot run with these parameters ({'; '.join(why)}); set "
                             "fast_step=false (the eager loop runs every option)")
    if params["train_feature_passes"] < 0:
        raise LtKitError(f"train_feature_passes must be >= 0 (0 = no training-feature cache), got "
                         f"{params['train_feature_passes']}")
    for k in ("epochs", "batch_size", "num_heads", "crt_epochs", "crt_batch_size", "lws_epochs", "lws_batch_size"):
        if params[k] < 1:
            raise LtKitError(f"parameter {k!r} must be >= 1, got {params[k]}")
    for k in ("crt_lr", "lws_lr"):
        if not params[k] > 0:
            raise LtKitError(f"parameter {k!r} must be > 0, got {params[k]}")
    for k in ("crt_weight_decay", "lws_weight_decay"):
        if not params[k] >= 0:
            raise LtKitError(f"parameter {k!r} must be >= 0, got {params[k]}")
    return params


def _torchrun_world_size() -> int:
    """The process count torchrun set (``WORLD_SIZE``; 1 outside torchrun), known before any process group."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_recipe(params: dict) -> None:
    """The recipe switches' ranges; the image policies run in the tensor input path only."""
    info = DATASETS[params["dataset"]]
    for k in ("mixup_alpha", "cutmix_alpha", "cutout", "sam_rho"):
        if params[k] < 0:
            raise LtKitError(f"{k} must be >= 0 (0 = off), got {params[k]}")
    if not 0 <= params["label_smoothing"] < 1:
        raise LtKitError(f"label_smoothing must be in [0, 1), got {params['label_smoothing']}")
    if not 0 <= params["randaugment_magnitude"] <= 30 or params["randaugment_ops"] < 1:
        raise LtKitError("randaugment needs randaugment_ops >= 1 and randaugment_magnitude in 0..30, got "
                         f"{params['randaugment_ops']} and {params['randaugment_magnitude']}")
    if info.kind != "tensor" and (params["augment"] != "none" or params["cutout"]):
        raise LtKitError(f"augment and cutout run in the tensor input path (cifar10_lt, cifar100_lt, digits_lt), not "
                         f"for {params['dataset']!r}; set augment=none and cutout=0 (mixup, cutmix and "
                         "label_smoothing work for every data set)")
    if params["cutout"] > info.image_size:
        raise LtKitError(f"cutout {params['cutout']} is larger than the {info.image_size}-pixel images")


def val_split_source(params: dict) -> str | None:
    """Where ``params`` take a validation split from, or None when they have none."""
    ds = params["dataset"]
    if ds == "folder":
        return f"val_root={params['val_root']}" if params["val_root"] else None
    if params["val_per_class"]:
        return f"val_per_class={params['val_per_class']}"
    if DATASETS[ds].kind == "files" and (params["val_list"] or "val" in (DATASETS[ds].lists or {})):
        return "the val list"                     # imagefiles checks that the list exists
    return None


def check_val_split(params: dict) -> None:
    """``select_best`` and ``eval_every`` pick and log on a validation split, never on the test set."""
    if val_split_source(params) is None:
        what = "select_best" if params["select_best"] else "eval_every"
        how = "set val_root" if params["dataset"] == "folder" else "set val_per_class (e.g. 50)" \
            if DATASETS[params["dataset"]].kind == "tensor" else "set val_per_class (e.g. 3, from the training list)"
        raise LtKitError(f"{what} needs a validation split and this run has none (choosing on the test set would "
                         f"report a test-chosen result); {how}, or turn {what} off")


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping of overrides (keys are checked by :func:`resolve`)."""
    path = Path(path)
    if not path.is_file():
        presets = sorted(p.stem for p in Path("params").glob("*.yaml")) if Path("params").is_dir() else []
        raise LtKitError(f"params file {path} not found" + (f"; presets: {', '.join(presets)}" if presets else ""))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LtKitError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LtKitError(f"{path} must hold a flat mapping of key: value")
    for k in data:
        if k not in PARAMS:
            raise _unknown(k, f" in {path}")
    return data


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["lr=0.1", "download=true"]`` -> typed overrides."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LtKitError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = coerce(key.strip(), value, " (--set)")
    return out


def fast_step_blockers(params: dict, world_size: int = 1) -> list[str]:
    """Why the fast step cannot run these params (empty: it can)."""
    why = []
    if DATASETS[params["dataset"]].kind != "tensor":
        why.append(f"{params['dataset']} reads image files through a DataLoader")
    if world_size > 1:
        why.append("distributed runs all-reduce every step")
    for k, off in (("mixup_alpha", 0.0), ("cutmix_alpha", 0.0), ("augment", "none"), ("cutout", 0)):
        if params.get(k, off) != off:
            why.append(f"{k} draws on the host every step")
    if params.get("sam_rho", 0.0):
        why.append("sam_rho (SAM's two passes run in the eager loop)")
    if params.get("loss") == "ldam_drw" and params.get("label_smoothing", 0.0):
        why.append("ldam_drw with label_smoothing (class-weighted smoothing selects on the host)")
    if params.get("sync_bn"):
        why.append("sync_bn")
    return why
