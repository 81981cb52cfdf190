"""Backbones (a registry by name) and the two classifier heads.

Every backbone has ``forward_features(x) -> (B, D)`` and ``num_features``; heads take features and return
logits, so the feature/head seam that TDE needs is explicit (timm's contract). Nothing here touches a
device: build on the CPU, then ``.to(device)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from lt_kit.errors import LtKitError
from lt_kit.maths.renamed import renamed_keyword
from lt_kit.maths.tde import tde_logits

_BACKBONES: dict[str, Callable[[], nn.Module]] = {}


def register_backbone(name: str):
    def deco(fn):
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = fn
        return fn
    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_backbone(name: str) -> nn.Module:
    if name not in _BACKBONES:
        raise LtKitError(f"unknown arch {name!r}; valid: {', '.join(list_backbones())}")
    return _BACKBONES[name]()


# --------------------------------------------------------------------------- ResNet-32 (BBN variant)
class _OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad ``planes // 4`` channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _OptionAShortcut(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _wide(x: Tensor) -> Tensor:
    """bf16/fp16 (autocast) -> float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ResNet32(nn.Module):
    """BBN's ``bbn_res32_cifar`` as used by the reference: 16/32/64 channels, 5/5/4 blocks, then two
    parallel 64-channel blocks (``cb_block``, ``rb_block``) whose pooled outputs are concatenated into a
    128-d feature, one 64-d chunk per classifier head."""

    num_features = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, 5, 1)
        self.layer2 = self._stage(16, 32, 5, 2)
        self.layer3 = self._stage(32, 64, 4, 2)            # num_blocks[2] - 1, as in BBN
        self.cb_block = _BasicBlock(64, 64)
        self.rb_block = _BasicBlock(64, 64)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)          # fan_in, gain sqrt(2)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [_BasicBlock(in_planes, planes, stride)]
        layers += [_BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.cat([self.cb_block(out), self.rb_block(out)], dim=1)
        return F.adaptive_avg_pool2d(_wide(out), 1).flatten(1)      # pooled in float32, also under bf16 autocast

    forward = forward_features


@register_backbone("resnet32")
def resnet32() -> nn.Module:
    return ResNet32()


# --------------------------------------------------------------------------- torchvision's ResNets
class TorchvisionResNet(nn.Module):
    """A torchvision ResNet trunk without its fc (``body``: stem, then layer1..layer4). ResNeXt-50 32x4d's init
    (kaiming normal, fan_out, BN gamma 1) is the reference's ``normal(0, sqrt(2 / (k*k*out)))``. Departure: the pool
    is adaptive, so 32x32 CIFAR input works (the reference's fixed ``AvgPool2d(7)`` crashes there, its issue #29).
    ``KEY_MAP`` renames torchvision's (and timm's) state-dict names to this trunk's, for pretrained weights."""

    KEY_MAP = {"conv1.": "body.0.", "bn1.": "body.1.", "layer1.": "body.4.", "layer2.": "body.5.",
               "layer3.": "body.6.", "layer4.": "body.7."}

    def __init__(self, name: str):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        self.num_features = net.fc.in_features
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                  net.layer1, net.layer2, net.layer3, net.layer4)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(_wide(self.body(x)), 1).flatten(1)      # float32 pool, as ResNet32

    forward = forward_features


@register_backbone("resnext50_32x4d")
def resnext50_32x4d() -> nn.Module:
    return TorchvisionResNet("resnext50_32x4d")


@register_backbone("resnet50")
def resnet50() -> nn.Module:
    """iNaturalist 2018's reference backbone (Decoupling)."""
    return TorchvisionResNet("resnet50")


@register_backbone("resnet152")
def resnet152() -> nn.Module:
    """Places-LT's reference backbone (OLTR, Decoupling: ImageNet-pretrained)."""
    return TorchvisionResNet("resnet152")


# --------------------------------------------------------------------------- heads
HEADS: dict[str, type] = {}


def register_head(name: str):
    """Register a classifier head under ``name`` (config's valid ``head`` values come from here). A head
    takes ``(num_features, num_classes, **params)``, has a ``weight`` (C, D), a ``label`` (its plain row in
    tables) and ``cache_logits(cache)``: its logits from a feature cache, which post-hoc methods build on."""
    def deco(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} registered twice")
        HEADS[name] = cls
        cls.name = name
        return cls
    return deco


@register_head("causal_norm")
class CausalNormHead(nn.Module):
    """The multi-head causal-norm classifier (Eq. 7 in training, Eq. 8 when given ``alpha``). ``cn_tau``: its
    logit scale (``tau=`` before 0.2.0: still accepted with a FutureWarning until 0.3.0)."""

    label = "De-confound"

    @renamed_keyword("tau", "cn_tau")      # the keyword was tau before 0.2.0 (**_ would have swallowed it)
    def __init__(self, num_features: int, num_classes: int, *, num_heads: int = 2, cn_tau: float = 16.0,
                 gamma: float = 1 / 32, **_):
        super().__init__()
        if num_features % num_heads:
            raise LtKitError(f"num_heads={num_heads} does not divide the feature dimension {num_features}")
        bound = 1 / math.sqrt(num_features)                 # the reference's uniform(-1/sqrt(D), 1/sqrt(D))
        self.weight = nn.Parameter(torch.empty(num_classes, num_features).uniform_(-bound, bound))
        self.num_heads, self.cn_tau, self.gamma = num_heads, cn_tau, gamma

    def forward(self, features: Tensor, direction: Tensor | None = None, alpha: float = 0.0) -> Tensor:
        return tde_logits(features, self.weight, direction, alpha,
                          cn_tau=self.cn_tau, gamma=self.gamma, num_heads=self.num_heads)

    @staticmethod
    def cache_logits(cache) -> Tensor:
        return tde_logits(cache.features, cache.weight, None, 0.0, cn_tau=cache.cn_tau, gamma=cache.gamma,
                          num_heads=cache.num_heads)


@register_head("linear")
class LinearHead(nn.Module):
    """Bias-free linear classifier: the softmax baseline ("Baseline (linear, no bias)")."""

    label = "Softmax"

    def __init__(self, num_features: int, num_classes: int, **_):
        super().__init__()
        self.fc = nn.Linear(num_features, num_classes, bias=False)

    @property
    def weight(self) -> Tensor:
        return self.fc.weight

    def forward(self, features: Tensor, direction: Tensor | None = None, alpha: float = 0.0) -> Tensor:
        return self.fc(features)

    @staticmethod
    def cache_logits(cache) -> Tensor:
        return cache.features @ cache.weight.T


@register_head("norm_linear")
class NormLinearHead(nn.Module):
    """LDAM's normalised linear classifier (kaidic/LDAM-DRW ``models/resnet_cifar.py::NormedLinear``): logits are
    ``scale * cos(x, w_c)``, scale s = ``norm_scale`` (LDAM's s = 30; LDAM applies it inside its loss, lt_kit in
    the head, which gives the same loss and makes post-hoc logit adjustment see LDAM's logit scale).
    ``weight`` is the effective classifier: the unit class weights times the scale, so the feature cache holds
    everything ``cache_logits`` needs."""

    label = "Norm-linear"

    def __init__(self, num_features: int, num_classes: int, *, norm_scale: float = 30.0, **_):
        super().__init__()
        w = torch.empty(num_classes, num_features).uniform_(-1, 1)
        self.raw_weight = nn.Parameter(w.renorm_(2, 0, 1e-5).mul_(1e5))     # LDAM's init: unit rows
        self.scale = float(norm_scale)

    @property
    def weight(self) -> Tensor:
        return self.scale * F.normalize(self.raw_weight, dim=1)

    def forward(self, features: Tensor, direction: Tensor | None = None, alpha: float = 0.0) -> Tensor:
        return F.normalize(features, dim=1) @ self.weight.T

    @staticmethod
    def cache_logits(cache) -> Tensor:
        return F.normalize(cache.features, dim=1) @ cache.weight.T


class LTModel(nn.Module):
    """Backbone + head + the momentum direction, kept as a buffer so it is saved with the weights and
    moves with ``.to(device)``. The training step updates it explicitly (see ``train.train_one_epoch``).
    ``cn_tau``: the causal-norm head's logit scale; ``tau=``, its name before 0.2.0, is still accepted with a
    FutureWarning until 0.3.0 (both given: TypeError)."""

    @renamed_keyword("tau", "cn_tau")      # the keyword was tau before 0.2.0
    def __init__(self, arch: str, num_classes: int, *, head: str = "causal_norm", num_heads: int = 2,
                 cn_tau: float = 16.0, gamma: float = 1 / 32, norm_scale: float = 30.0):
        super().__init__()
        if head not in HEADS:
            raise LtKitError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        self.arch, self.head_name, self.num_classes = arch, head, num_classes
        self.backbone = create_backbone(arch)
        self.num_features = self.backbone.num_features
        self.head = HEADS[head](self.num_features, num_classes, num_heads=num_heads, cn_tau=cn_tau, gamma=gamma,
                                norm_scale=norm_scale)
        self.register_buffer("direction", torch.zeros(self.num_features))
        self.backbone_frozen = False

    def freeze_backbone(self) -> None:
        """Only the head trains: the backbone's parameters take no gradient and its BatchNorm layers stay in
        eval mode (their running statistics are used, never updated), so the backbone is a fixed function and
        stays bit-identical through training. The direction is still updated from its features."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()            # frozen means eval-mode BatchNorm, whatever mode the model is put in
        return self

    def trainable_parameters(self) -> list:
        """What the optimiser updates: every parameter, or the head's alone when the backbone is frozen."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training forward: (Eq. 7 logits, features). Under bf16 autocast only the backbone's convolutions
        run in bf16: features are pooled in float32 and the head runs with autocast off, so the causal-norm
        einsums (cn_tau = 16 magnifies their rounding) and the cached features stay float32."""
        feats = self.backbone(x)        # backbone.forward is forward_features; calling the module honours compile()
        with torch.autocast(feats.device.type, enabled=False):
            return self.head(_wide(feats)), feats

    def signature(self) -> dict:
        """What a checkpoint must match to be loaded into this model."""
        return {"arch": self.arch, "head": self.head_name, "num_classes": self.num_classes,
                "num_features": self.num_features}
