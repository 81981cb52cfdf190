"""The modern recipe's augmentations as batched, seeded tensor ops on the training device.

Every switch is off by default, so the reference recipe (pad-and-crop + flip, ``loaders.TensorLoader``) draws
exactly the random numbers it drew before. All draws come from the loader's CPU generator (seeded by
(seed, epoch)), so a batch is the same on any device, in any process of a distributed run, and after a resume.

- ``PolicyAugment``: AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR 2019) or RandAugment (Cubuk et al.,
  2020), drawn *per image*. torchvision's v2 transforms draw one operation per call, so a batch passed to them
  would get one operation for all its images; here each image draws its own sub-policy (or operations), the
  batch is grouped by (operation, magnitude), and each group goes through torchvision's own operation code in
  one batched call (``_apply_image_or_video_transform``: its ops, policy table and magnitude bins, not a copy).
  Every v2 op used is per-image on a batch (contrast, autocontrast and equalize reduce over each image alone),
  so the grouped result equals applying the op image by image (``tests/test_augment.py`` checks it).
- ``cutout_``: Cutout (DeVries & Taylor, 2017): one square of ``size`` pixels per image, centred uniformly and
  clipped at the border, set to black; after the policy and before normalisation, as PaCo/BCL's CIFAR recipe.
- ``Mixer``: mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch with a permutation of itself; one
  lambda per batch from Beta(alpha, alpha) (both on: each batch picks one with probability 0.5, timm's switch).
  The loss is ``lam * loss(y) + (1 - lam) * loss(y[perm])`` with the run's own criterion, so it works for every
  loss in ``methods.LOSSES`` (LDAM's margins and DRW's weights need hard labels; torchvision's ``v2.MixUp``
  gives soft one-hot targets instead). CutMix's lambda is the exact pixel share of the kept image after the box
  is clipped. **TDE departs here**: the momentum direction is updated from the mixed batch's features (the
  features the model trained on), not from clean images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lt_kit.maths.seeds import epoch_generator

POLICIES = ("none", "autoaugment", "randaugment")


def _v2():
    import torchvision.transforms.v2 as v2  # late: torchvision is only needed when a policy is on
    return v2


class PolicyAugment:
    """Per-image AutoAugment (CIFAR-10 policy) or RandAugment on uint8 ``(B, C, H, W)`` batches."""

    def __init__(self, kind: str, *, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31):
        v2 = _v2()
        if kind == "autoaugment":
            self.tv = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
            self.bins = 10                            # AutoAugment's magnitude bins (torchvision's forward)
        elif kind == "randaugment":
            if not 0 <= magnitude < num_bins:
                raise ValueError(f"randaugment magnitude must be in [0, {num_bins - 1}], got {magnitude}")
            self.tv = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_bins)
            self.bins = num_bins
        else:
            raise ValueError(f"unknown policy {kind!r}; valid: {', '.join(POLICIES[1:])}")
        self.kind, self.num_ops, self.magnitude = kind, num_ops, magnitude
        self.space = self.tv._AUGMENTATION_SPACE
        self.ops = list(self.space)

    def _magnitude(self, op: str, idx: int, negative: bool, h: int, w: int) -> float:
        fn, signed = self.space[op]
        mags = fn(self.bins, h, w)
        if mags is None:
            return 0.0
        m = float(mags[idx])
        return -m if signed and negative else m

    def draw(self, b: int, g: torch.Generator, h: int, w: int) -> list[list[tuple[str, float] | None]]:
        """Per image, per round: ``(op, magnitude)`` or None (skipped). A fixed number of draws per image, so
        the generator advances the same whatever is drawn."""
        rounds = []
        if self.kind == "autoaugment":
            pol = self.tv._policies
            which = torch.randint(len(pol), (b,), generator=g).tolist()
            for slot in range(2):
                apply = torch.rand(b, generator=g).tolist()
                neg = (torch.rand(b, generator=g) <= 0.5).tolist()
                r = []
                for i in range(b):
                    op, p, idx = pol[which[i]][slot]
                    r.append((op, self._magnitude(op, idx or 0, neg[i], h, w)) if apply[i] <= p else None)
                rounds.append(r)
        else:
            for _ in range(self.num_ops):
                ops = torch.randint(len(self.ops), (b,), generator=g).tolist()
                neg = (torch.rand(b, generator=g) <= 0.5).tolist()
                rounds.append([(self.ops[o], self._magnitude(self.ops[o], self.magnitude, n, h, w))
                               for o, n in zip(ops, neg)])
        return rounds

    def apply(self, x: Tensor, rounds, keep: slice = slice(None)) -> Tensor:
        """Apply drawn ``rounds`` (rows ``keep`` of the global batch) to uint8 ``x``; returns a new tensor."""
        x = x.contiguous()
        for r in rounds:
            groups: dict[tuple[str, float], list[int]] = {}
            for i, d in enumerate(r[keep]):
                if d is not None and d[0] != "Identity":
                    groups.setdefault(d, []).append(i)
            for (op, mag), rows in groups.items():
                idx = torch.tensor(rows, device=x.device)
                x[idx] = self.tv._apply_image_or_video_transform(x[idx], op, mag, interpolation=self.tv.interpolation,
                                                                 fill=self.tv._fill)
        return x

    def __call__(self, x: Tensor, g: torch.Generator, b: int | None = None, keep: slice = slice(None)) -> Tensor:
        """Draw for a global batch of ``b`` images (default ``len(x)``) and apply rows ``keep`` to ``x``."""
        return self.apply(x, self.draw(b or len(x), g, x.shape[-2], x.shape[-1]), keep)


def cutout_(x: Tensor, size: int, g: torch.Generator, b: int | None = None, keep: slice = slice(None)) -> Tensor:
    """Zero one ``size`` x ``size`` square per image of uint8 ``x`` in place (centre uniform over the image,
    clipped at the border, as DeVries & Taylor's code). Draws cover a global batch of ``b`` images."""
    b = b or len(x)
    h, w = x.shape[-2:]
    cy = torch.randint(0, h, (b,), generator=g)[keep].to(x.device)
    cx = torch.randint(0, w, (b,), generator=g)[keep].to(x.device)
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    iny = (ys[None] >= (cy - size // 2)[:, None]) & (ys[None] < (cy - size // 2 + size)[:, None])       # (B, H)
    inx = (xs[None] >= (cx - size // 2)[:, None]) & (xs[None] < (cx - size // 2 + size)[:, None])       # (B, W)
    hole = (iny[:, :, None] & inx[:, None, :])[:, None]                                                 # (B,1,H,W)
    return x.masked_fill_(hole, 0)


@dataclass
class Mix:
    """One mixed batch: the second labels and the weight of the first (``lam``; ``1 - lam`` on ``y_b``)."""
    y_b: Tensor
    lam: float
    kind: str                     # "mixup" or "cutmix"


class Mixer:
    """Mixup / CutMix of training batches, seeded by (seed, epoch) and the step, independent of the loader's
    draws (turning it on does not change the crops and flips). ``mix(x, y)`` returns the mixed images and a
    :class:`Mix`; ``Mixer.loss`` combines a criterion over both label sets."""

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, seed: int = 0, switch_prob: float = 0.5):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        self.mixup_alpha, self.cutmix_alpha, self.seed, self.switch_prob = mixup_alpha, cutmix_alpha, seed, switch_prob
        self.set_epoch(0)

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def set_epoch(self, epoch: int) -> None:
        self.g = epoch_generator(self.seed, epoch, "mix")

    def draw(self, b: int, h: int, w: int) -> dict:
        """The draws of one step: kind, lambda, pairing permutation and (CutMix) the box."""
        g = self.g
        use_cut = self.cutmix_alpha > 0 and (self.mixup_alpha == 0
                                             or float(torch.rand((), generator=g)) < self.switch_prob)
        a = self.cutmix_alpha if use_cut else self.mixup_alpha
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (), generator=g)))
        lam = float(rng.beta(a, a))
        perm = torch.randperm(b, generator=g)
        d = {"kind": "cutmix" if use_cut else "mixup", "lam": lam, "perm": perm}
        if use_cut:                                   # CutMix's box: area (1 - lam), centre uniform, clipped
            ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = int(torch.randint(h, (), generator=g)), int(torch.randint(w, (), generator=g))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            d.update(box=(y0, y1, x0, x1), lam=1 - (y1 - y0) * (x1 - x0) / (h * w))
        return d

    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Mix]:
        d = self.draw(len(x), x.shape[-2], x.shape[-1])
        perm = d["perm"].to(x.device)
        if d["kind"] == "mixup":
            x = x * d["lam"] + x[perm] * (1 - d["lam"])
        else:
            y0, y1, x0, x1 = d["box"]
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        return x, Mix(y[perm], d["lam"], d["kind"])

    @staticmethod
    def loss(criterion, logits: Tensor, y: Tensor, mix: Mix | None) -> Tensor:
        if mix is None:
            return criterion(logits, y)
        return mix.lam * criterion(logits, y) + (1 - mix.lam) * criterion(logits, mix.y_b)


def make_mixer(params: dict) -> Mixer | None:
    """The run's mixer, or None when both alphas are 0 (the reference recipe)."""
    m = Mixer(params["mixup_alpha"], params["cutmix_alpha"], params["seed"])
    return m if m.enabled else None


def make_policy(params: dict) -> PolicyAugment | None:
    if params["augment"] == "none":
        return None
    return PolicyAugment(params["augment"], num_ops=params["randaugment_ops"],
                         magnitude=params["randaugment_magnitude"])
