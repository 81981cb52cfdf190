"""Feature caches: one backbone pass over a split, saved; every method and strength is then computed from it.

A cache holds a split's features, labels, the classifier weight and the momentum direction (``features.pt``
for the test split, ``val_features.pt`` for the validation split, ``train_features.pt`` for the training subset,
which the two-stage methods re-train on).
The reference re-runs the backbone for every alpha; here a strength costs milliseconds (``summary.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from lt_kit.errors import LtKitError
from lt_kit.precision import autocast, resolve_bf16


@torch.no_grad()
def extract_features(model, loader, *, bf16: bool = False) -> tuple[Tensor, Tensor]:
    """Eval-mode features (N, D) float32 and labels (N,), on the CPU, in loader order."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    dev = next(model.parameters()).device
    amp = autocast(dev, resolve_bf16(bf16, dev))
    with amp:
        for x, y in loader:
            feats.append(model.backbone(x).float())
            labels.append(y)
    model.train(was_training)
    return torch.cat(feats).cpu(), torch.cat(labels).cpu()


@dataclass
class FeatureCache:
    """Everything needed to evaluate any alpha without the backbone."""
    features: Tensor              # (N, D) float32
    labels: Tensor                # (N,) int64
    weight: Tensor                # (C, D) classifier weight
    direction: Tensor             # (D,) momentum direction
    head: str                     # a name in models.HEADS
    num_heads: int
    cn_tau: float                 # the causal-norm head's logit scale (parameter tau)
    gamma: float
    train_counts: list
    class_names: list
    many_threshold: int = 100
    few_threshold: int = 20
    passes: int = 1               # training-feature cache: passes over the subset (K > 1: augmented, see below)
    # The counts many / medium / few and head / tail are defined on, when they are not ``train_counts``: a list
    # data set's training list as published, before ``held_out`` images per class went to the validation split
    # (the published splits are the full lists'). None: ``train_counts`` (CIFAR / digits draw the long-tailed
    # subset after their hold-out, so the subset's counts are the published profile; folder has no hold-out).
    group_counts: list | None = None
    held_out: int = 0             # images per class held out of the training list for validation (with group_counts)

    @classmethod
    def from_model(cls, model, features, labels, params, train_counts, class_names,
                   group_counts=None) -> "FeatureCache":
        held = params.get("val_per_class", 0) if group_counts is not None else 0
        return cls(features, labels, model.head.weight.detach().float().cpu(), model.direction.detach().float().cpu(),
                   params["head"], params["num_heads"], params["tau"], params["gamma"], list(train_counts),
                   list(class_names), params["many_threshold"], params["few_threshold"],
                   group_counts=None if group_counts is None else list(group_counts), held_out=held)

    @property
    def shot_counts(self) -> list:
        """Per-class counts the many / medium / few and head / tail splits are defined on (see ``group_counts``)."""
        return self.train_counts if self.group_counts is None else self.group_counts

    def thresholds(self) -> dict:
        """metrics.json's ``thresholds``: many / few, and ``held_out`` when the splits are counted on the
        training list before its validation hold-out (the table footers say so)."""
        out = {"many": self.many_threshold, "few": self.few_threshold}
        return {**out, "held_out": self.held_out} if self.group_counts is not None else out

    def save(self, path: str | Path) -> None:
        from lt_kit.runs.rundir import atomic_write_bytes
        atomic_write_bytes(Path(path), lambda f: torch.save(asdict(self), f))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureCache":
        path = Path(path)
        if not path.is_file():
            raise LtKitError(f"{path} not found: run `python -m lt_kit test --run-dir {path.parent}` to build the "
                             "cache")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "tau" in state:                    # a cache that names the causal-norm scale plainly "tau"
                state["cn_tau"] = state.pop("tau")
            return cls(**state)
        except Exception as e:
            raise LtKitError(f"{path} is not a readable feature cache ({type(e).__name__}); delete it and run "
                             f"`python -m lt_kit test --run-dir {path.parent}`") from None


def cache_features(model, loader, params: dict, train_counts, class_names, group_counts=None) -> FeatureCache:
    """The cache of one split under ``model`` (eval mode, the run's precision); ``group_counts``: see
    ``FeatureCache.group_counts`` (``Data.group_counts``)."""
    feats, labels = extract_features(model, loader, bf16=params["bf16"])
    return FeatureCache.from_model(model, feats, labels, params, train_counts, class_names, group_counts)


def cache_train_features(model, loaders: list, params: dict, train_counts, class_names,
                         group_counts=None) -> FeatureCache:
    """The training-feature cache (``train_features.pt``), input of the two-stage methods (cRT, LWS): the
    frozen backbone in eval mode over the long-tailed training subset once per loader in ``loaders``
    (``training.build.train_pass_loaders``: the plain images, or K augmented passes), concatenated."""
    parts = [extract_features(model, loader, bf16=params["bf16"]) for loader in loaders]
    cache = FeatureCache.from_model(model, torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts]),
                                    params, train_counts, class_names, group_counts)
    cache.passes = len(loaders)
    return cache
