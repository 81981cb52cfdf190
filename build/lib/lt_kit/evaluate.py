"""Evaluation: one backbone pass over a split, cached; every alpha is then computed from the cache.

The reference recomputes the whole forward pass per alpha (reference-spec.md §6). Here the features,
labels, classifier weight and momentum direction are saved once (``features.pt``) and
``AlphaEvaluator`` turns any alpha into logits with one multiply-add (see ``tde.tde_parts``).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import LtKitError
from .metrics import head_tail_accuracy, per_class_accuracy, shot_accuracy
from .tde import check_alpha, tde_parts


@contextlib.contextmanager
def one_thread():
    """Per-alpha work is a few small ops: one thread avoids waiting for a second one to be scheduled
    (20 ms -> 3 ms per alpha on a busy 2-core machine, bench/results/alpha.md)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def extract_features(model, loader, *, bf16: bool = False) -> tuple[Tensor, Tensor]:
    """Eval-mode features (N, D) float32 and labels (N,), on the CPU, in loader order."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    dev = next(model.parameters()).device
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 and dev.type == "cuda" else contextlib.nullcontext()
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
    head: str                     # "causal_norm" or "linear"
    num_heads: int
    tau: float
    gamma: float
    train_counts: list
    class_names: list
    many_threshold: int = 100
    few_threshold: int = 20

    @classmethod
    def from_model(cls, model, features, labels, params, train_counts, class_names) -> "FeatureCache":
        return cls(features, labels, model.head.weight.detach().float().cpu(), model.direction.detach().float().cpu(),
                   params["head"], params["num_heads"], params["tau"], params["gamma"], list(train_counts),
                   list(class_names), params["many_threshold"], params["few_threshold"])

    def save(self, path: str | Path) -> None:
        from .runs import atomic_write_bytes
        atomic_write_bytes(Path(path), lambda f: torch.save(asdict(self), f))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureCache":
        path = Path(path)
        if not path.is_file():
            raise LtKitError(f"{path} not found: run `python -m lt_kit test --run-dir {path.parent}` to build the cache")
        try:
            return cls(**torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise LtKitError(f"{path} is not a readable feature cache ({type(e).__name__}); delete it and run "
                             f"`python -m lt_kit test --run-dir {path.parent}`") from None


class AlphaEvaluator:
    """Precomputes Eq. 8's two alpha-free terms; ``logits(alpha)`` is then ``base - alpha * effect``."""

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self.num_classes = cache.weight.shape[0]
        if cache.head == "causal_norm":
            self.base, self.effect = tde_parts(cache.features, cache.weight, cache.direction, tau=cache.tau,
                                               gamma=cache.gamma, num_heads=cache.num_heads)
        else:                                            # linear head: no TDE, alpha has no effect
            self.base, self.effect = cache.features @ cache.weight.T, None
        self.labels_np = cache.labels.numpy()

    def logits(self, alpha: float) -> Tensor:
        alpha = check_alpha(alpha)
        return self.base if self.effect is None or alpha == 0 else torch.addcmul(self.base, self.effect, torch.tensor(-alpha))

    def predict(self, alpha: float) -> np.ndarray:
        with one_thread():
            return self.logits(alpha).argmax(1).numpy()

    def metrics(self, alpha: float) -> dict:
        """many/medium/few/overall, head/tail (median rule) and per-class accuracy at ``alpha``."""
        c = self.cache
        preds = self.predict(alpha)
        out = shot_accuracy(preds, self.labels_np, c.train_counts, c.many_threshold, c.few_threshold)
        out["head_tail"] = head_tail_accuracy(preds, self.labels_np, c.train_counts)
        out["per_class"] = per_class_accuracy(preds, self.labels_np, self.num_classes).tolist()
        out["pred_counts"] = np.bincount(preds, minlength=self.num_classes).tolist()
        return out

    def sweep(self, alphas) -> list[dict]:
        return [{"alpha": float(a), **self.metrics(a)} for a in alphas]


def summary(cache: FeatureCache, alpha: float) -> dict:
    """The run's ``metrics.json``: the alpha used, ``softmax`` (no TDE; De-confound for the causal head)
    and ``tde`` (None for the linear head), each with many/medium/few/overall and per-class accuracy."""
    ev = AlphaEvaluator(cache)
    tde = ev.metrics(alpha) if cache.head == "causal_norm" else None
    return {"alpha": float(alpha), "head": cache.head, "softmax": ev.metrics(0.0), "tde": tde,
            "train_counts": cache.train_counts, "class_names": cache.class_names,
            "thresholds": {"many": cache.many_threshold, "few": cache.few_threshold}}


def format_table(metrics: dict) -> str:
    """The results table (percent), as the reference prints it: many, medium, few, overall."""
    def row(name, m):
        vals = ["   -  " if m[k] != m[k] else f"{100 * m[k]:6.2f}" for k in ("many", "medium", "few", "overall")]
        return f"{name:<26}" + "".join(f"{v:>9}" for v in vals)
    first = "De-confound (alpha=0)" if metrics["head"] == "causal_norm" else "Softmax (linear head)"
    lines = [f"{'':<26}{'many':>9}{'medium':>9}{'few':>9}{'overall':>9}", row(first, metrics["softmax"])]
    if metrics.get("tde"):
        lines.append(row(f"De-confound-TDE (a={metrics['alpha']:g})", metrics["tde"]))
    t = metrics["thresholds"]
    lines.append(f"(many: >{t['many']} training images, few: <{t['few']}; '-' = no class in that split)")
    return "\n".join(lines)
