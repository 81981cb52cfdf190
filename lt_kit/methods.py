"""The method registry: one shape for every classifier head and every post-hoc method, one table each.

Config (valid ``head`` values), the evaluator, ``metrics.json``, the tables, the explorer, the benches and the
tests read these tables; adding a method is one entry here (plus its maths in its own file), nothing else.

- A **head** (``models.HEADS``, registered with ``@register_head``) owns its weight, names its plain row
  (``label``) and turns a feature cache into logits (``cache_logits``), so any post-hoc method works on it.
- A **training loss** (``LOSSES``) names the heads it fits and makes the criterion of each epoch from the
  class counts (``make_criterion``), so ``fit`` has one loss call for every method.
- A **post-hoc method** (``POSTHOC``) re-scores a cache at a strength: its name and strength's name, the
  heads it applies to (and why it refuses the others), the paper's fixed rule for the strength, the grid the
  validation split chooses from, and ``prepare(cache) -> logits(strength)`` that precomputes what it can, so
  one strength costs milliseconds. Strength 0 of every method is the head's own logits.
- A **two-stage method** (``DECOUPLED``: cRT, LWS) fits a classifier on the cached training features with
  class-balanced sampling and scores any cache; it has no strength. Its two rows: the last epoch's classifier
  (lt_kit's fixed rule) and, with a validation split, the epoch best on it (the authors' procedure).

Every method names its two rows for the "chosen by" column of the tables (``rule_label``, ``val_label``;
:func:`chosen_by`): a post-hoc method's fixed strength is its paper's rule, a two-stage method's last epoch is
lt_kit's own rule (Kang et al.'s code keeps the epoch best on validation data and scores that one).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lt_kit.errors import LtKitError
from lt_kit.maths.posthoc import logit_adjust, tau_normalize
from lt_kit.maths.strength import check_strength
from lt_kit.maths.tde import tde_parts
from lt_kit.models import HEADS


@dataclass(frozen=True)
class PostHoc:
    name: str                                   # registry key: `--method`, metrics.json's "methods" keys
    label: str                                  # row name in tables and plots
    strength: str                               # the strength's name: "alpha", "tau"
    heads: tuple[str, ...]                      # heads it applies to
    rule: Callable[[float], float]              # the paper's fixed strength, given the run's preset alpha
    rule_text: str
    grid_max: float                             # the validation split chooses from 0 .. grid_max
    prepare: Callable[[object], Callable[[float], Tensor]]
    refused: dict[str, str] = field(default_factory=dict)    # head -> why the method does not apply to it
    grid_step: float = 0.05
    rule_label: str = "paper rule"              # "chosen by" of the row at the fixed strength
    val_label: str = "val split"                # "chosen by" of the row at the validation-chosen strength

    def grid(self) -> np.ndarray:
        n = int(round(self.grid_max / self.grid_step))
        return np.round(np.linspace(0.0, n * self.grid_step, n + 1), 6)

    def check(self, strength: float) -> float:
        try:
            return check_strength(self.strength, strength)
        except ValueError as e:
            raise LtKitError(f"{self.name}: {e}") from None


def head_logits(cache) -> Tensor:
    """The head's own logits (no post-hoc method) from a feature cache."""
    return HEADS[cache.head].cache_logits(cache)


def _prepare_tde(cache):
    base, effect = tde_parts(cache.features, cache.weight, cache.direction, cn_tau=cache.cn_tau, gamma=cache.gamma,
                             num_heads=cache.num_heads)
    minus = torch.empty(())
    def logits(alpha: float) -> Tensor:          # Eq. 8 as one fused multiply-add
        return base if alpha == 0 else torch.addcmul(base, effect, minus.fill_(-alpha))
    return logits


def _prepare_logit_adjust(cache):
    base, counts = head_logits(cache), list(cache.train_counts)
    return lambda la_tau: logit_adjust(base, counts, la_tau)


def _prepare_tau_norm(cache):
    feats, weight = cache.features, cache.weight
    return lambda tn_tau: feats @ tau_normalize(weight, tn_tau).T


POSTHOC: dict[str, PostHoc] = {m.name: m for m in [
    PostHoc("tde", "TDE", "alpha", ("causal_norm",), lambda preset_alpha: preset_alpha,
            "the run's preset alpha (paper: 1.0 CIFAR-10, 1.5 CIFAR-100, 3.0 ImageNet-LT)", 3.0, _prepare_tde,
            refused={h: "TDE removes the momentum direction's effect through the causal-norm head's normalised "
                        "heads; this head has no such term (train head=causal_norm)"
                     for h in HEADS if h != "causal_norm"}),
    PostHoc("logit_adjust", "logit adj.", "tau", tuple(HEADS), lambda _: 1.0,
            "tau = 1 (Menon et al.: the Bayes-optimal shift for a balanced test set)", 3.0, _prepare_logit_adjust),
    PostHoc("tau_norm", "tau-norm", "tau", ("linear",), lambda _: 1.0,
            "tau = 1 (unit-norm class weights; Kang et al. choose tau in [0, 1] on validation data)", 2.0,
            _prepare_tau_norm,
            refused={"causal_norm": "the causal-norm head already divides each class weight by its norm "
                                    "(||w|| + gamma), so tau-normalising it changes almost nothing; use tde or "
                                    "logit_adjust on this head",
                     "norm_linear": "the normalised head's class weights all have the same norm already, so "
                                    "tau-normalising changes nothing; use logit_adjust on this head"}),
]}


# --------------------------------------------------------------------------- two-stage (decoupled) methods
@dataclass(frozen=True)
class Decoupled:
    """A two-stage method (Kang et al.): it fits a classifier on the training-feature cache
    (``train_features.pt``) with class-balanced sampling, then gives logits on any cache
    (``evaluation/decoupled.py``). It has no strength: lt_kit's fixed rule scores the last epoch's classifier;
    with a validation split, the epoch best on it is scored too, which is the authors' procedure
    (classifier-balancing's ``run_networks.py`` keeps the best validation epoch's weights and tests those).
    ``keys`` are its parameters in ``config.PARAMS``; the rows' "how" text is built from the values that ran
    (:meth:`how`), since data sets differ (iNaturalist: cRT 30 epochs, weight decay 1e-4; Places-LT: lr 0.1 at
    batch 256)."""
    name: str
    label: str
    heads: tuple[str, ...]
    keys: tuple[str, ...]                       # (epochs, lr, batch size, weight decay) parameter names
    what: str                                   # what it fits, and whose method it is (no settings: see how())
    refused: dict[str, str] = field(default_factory=dict)
    strength: str = "epoch"                     # what its validation split chooses
    rule_label: str = "last epoch (lt_kit rule)"            # "chosen by" of the last-epoch row
    val_label: str = "val split (authors' procedure)"       # "chosen by" of the validation-chosen epoch's row

    def hyper(self, params: dict) -> dict:
        """Its settings from a run's parameters (defaults: the authors' configs), as ``epochs``, ``lr``, ``batch``,
        ``weight_decay``."""
        from lt_kit.config import DEFAULTS
        return {short: params.get(k, DEFAULTS[k])
                for short, k in zip(("epochs", "lr", "batch", "weight_decay"), self.keys)}

    def how(self, hyper: dict, which: str) -> str:
        """The ``how`` text of its ``which`` row ("rule" or "val") in ``metrics.json``, from the settings that
        ran (``hyper``, as :meth:`hyper` gives them)."""
        chosen = {"rule": "the last epoch's classifier (lt_kit's fixed rule)",
                  "val": "the epoch with the best overall accuracy on the validation split, first of ties (the "
                         "authors' procedure)"}[which]
        return f"{self.what}; {settings_text(hyper)}; {chosen}"


def settings_text(hyper: dict) -> str:
    """A second stage's settings as they ran: ``10 epochs, lr 0.2, batch 512, weight decay 0.0005, cosine``."""
    return (f"{hyper['epochs']:g} epochs, lr {hyper['lr']:g}, batch {hyper['batch']:g}, "
            f"weight decay {hyper['weight_decay']:g}, cosine")


DECOUPLED: dict[str, Decoupled] = {m.name: m for m in [
    Decoupled("crt", "cRT", tuple(HEADS), ("crt_epochs", "crt_lr", "crt_batch_size", "crt_weight_decay"),
              "a new linear classifier (with bias) re-trained on the frozen backbone's features, class-balanced "
              "(Kang et al., ICLR 2020)"),
    Decoupled("lws", "LWS", tuple(HEADS), ("lws_epochs", "lws_lr", "lws_batch_size", "lws_weight_decay"),
              "the head kept, one learned scale per class on its logits, class-balanced (Kang et al., ICLR 2020)"),
]}


def chosen_by(method: str | None, how: str) -> str:
    """The "chosen by" cell of a result row: ``method`` (None: the head's own logits) and ``how`` ("rule", "val"
    or ""), in the method's own words: "paper rule" / "val split" for a post-hoc method, "last epoch (lt_kit
    rule)" / "val split (authors' procedure)" for a two-stage one; "–" for a row with nothing chosen."""
    m = POSTHOC.get(method) or DECOUPLED.get(method)
    if m is None or how not in ("rule", "val"):
        return "–"
    return m.rule_label if how == "rule" else m.val_label


def decoupled_for(head: str) -> list[Decoupled]:
    """The two-stage methods that apply to ``head``, in registry order."""
    return [m for m in DECOUPLED.values() if head in m.heads]


def get_decoupled(name: str, head: str) -> Decoupled:
    m = DECOUPLED[name]
    if head not in m.heads:
        why = m.refused.get(head, "")
        raise LtKitError(f"method {name!r} does not apply to the {head} head{': ' + why if why else ''}")
    return m


def all_method_names() -> list[str]:
    """Every method a run can be scored with: the post-hoc ones (a strength) and the two-stage ones."""
    return [*POSTHOC, *DECOUPLED]


def applies(method: str, head: str) -> bool:
    """Whether post-hoc ``method`` applies to ``head`` (the registry's word, not a branch on names)."""
    return method in POSTHOC and head in POSTHOC[method].heads


def valid_pairs() -> str:
    return "; ".join(f"{m.name} on {', '.join(m.heads)}" for m in POSTHOC.values())


def methods_for(head: str) -> list[PostHoc]:
    """The post-hoc methods that apply to ``head``, in registry order."""
    return [m for m in POSTHOC.values() if head in m.heads]


def get_method(name: str, head: str) -> PostHoc:
    """The registry entry ``name``, checked against ``head``; an ``LtKitError`` names the valid pairs."""
    if name in DECOUPLED:
        raise LtKitError(f"{name!r} is a two-stage method with no strength (it re-trains on the training-feature "
                         f"cache); score it with `python -m lt_kit test --method {name}`")
    if name not in POSTHOC:
        raise LtKitError(f"unknown post-hoc method {name!r}; valid: {', '.join(all_method_names())}")
    m = POSTHOC[name]
    if head not in m.heads:
        why = m.refused.get(head, "")
        raise LtKitError(f"method {name!r} does not apply to the {head} head{': ' + why if why else ''}; "
                         f"valid pairs: {valid_pairs()}")
    return m


# --------------------------------------------------------------------------- training losses
@dataclass(frozen=True)
class Loss:
    """A training loss: the heads it fits, and ``make(params, class_counts, epoch) -> criterion(logits, y)``,
    built once per epoch by ``fit`` (so a loss may change with the epoch, as DRW does)."""
    name: str
    label: str
    heads: tuple[str, ...]
    make: Callable[..., Callable[[Tensor, Tensor], Tensor]]     # (params, counts, epoch, device=None)
    why: str = ""                                # why other heads are refused


def drw_epoch(params: dict) -> int:
    """DRW's first re-weighted epoch: the schedule's first lr drop (epoch 120 of the reference's 200, 27 of the
    45-epoch CPU schedule). LDAM-DRW itself re-weights from its own first drop (epoch 160 of 200)."""
    if params["schedule"] != "warmup_multistep" or not params["milestones"]:
        raise LtKitError("loss=ldam_drw defers its re-weighting to the first lr drop: it needs "
                         "schedule=warmup_multistep with milestones")
    return min(params["milestones"])


def _make_ce(params, counts, epoch, device=None):
    ls = params.get("label_smoothing", 0.0)
    return lambda logits, y: torch.nn.functional.cross_entropy(logits, y, label_smoothing=ls)


def _make_logit_adjusted(params, counts, epoch, device=None):
    from lt_kit.maths.losses import adjusted_cross_entropy
    from lt_kit.maths.posthoc import log_prior
    loss_tau, ls = params["loss_tau"], params.get("label_smoothing", 0.0)
    prior = log_prior(counts).to(device)            # on the device once: no copy inside a step (or a CUDA graph)
    return lambda logits, y: adjusted_cross_entropy(logits, y, prior, loss_tau, ls)


def _make_ldam_drw(params, counts, epoch, device=None):
    from lt_kit.maths.losses import drw_weights, ldam_loss, ldam_margins
    margins, scale = ldam_margins(counts, params["ldam_max_margin"]).to(device), params["norm_scale"]
    weight = drw_weights(counts, params["drw_beta"]).to(device) if epoch >= drw_epoch(params) else None
    ls = params.get("label_smoothing", 0.0)
    return lambda logits, y: ldam_loss(logits, y, margins, scale, weight, ls)


def criterion_phase(params: dict, epoch: int) -> tuple:
    """What makes ``make_criterion``'s result differ between epochs (DRW's switch); a captured step is
    recaptured when it changes."""
    return (params["loss"], params["loss"] == "ldam_drw" and epoch >= drw_epoch(params))


LOSSES: dict[str, Loss] = {l.name: l for l in [
    Loss("ce", "cross-entropy", tuple(HEADS), _make_ce),
    Loss("logit_adjusted", "logit-adjusted loss", tuple(HEADS), _make_logit_adjusted),
    Loss("ldam_drw", "LDAM-DRW", ("norm_linear",), _make_ldam_drw,
         why="LDAM's margins are on cosine logits: train it with head=norm_linear"),
]}


def check_loss(params: dict) -> None:
    """Refuse a loss/head pair that does not fit, naming the valid pairs; check the loss's own settings."""
    loss = LOSSES[params["loss"]]
    if params["head"] not in loss.heads:
        pairs = "; ".join(f"{l.name} with {', '.join(l.heads)}" for l in LOSSES.values())
        raise LtKitError(f"loss {loss.name!r} does not fit head {params['head']!r}"
                         f"{': ' + loss.why if loss.why else ''}; valid pairs: {pairs}")
    if loss.name == "ldam_drw":
        drw_epoch(params)
        if not 0 < params["drw_beta"] < 1 or not params["ldam_max_margin"] > 0:
            raise LtKitError("ldam_drw needs 0 < drw_beta < 1 and ldam_max_margin > 0")


def make_criterion(params: dict, class_counts, epoch: int, device=None):
    """The training criterion for ``epoch`` (1-based); its class-count tensors live on ``device``."""
    return LOSSES[params["loss"]].make(params, list(class_counts), epoch, device)
