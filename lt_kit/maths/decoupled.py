"""Decoupled classifiers (Kang et al., ICLR 2020, "Decoupling Representation and Classifier for Long-Tailed
Recognition"): a second stage that re-trains only the classifier on frozen features with class-balanced sampling.

- **cRT** re-initialises a linear classifier (with bias, their ``DotProductClassifier``) and trains it.
- **LWS** keeps the classifier and learns one scale per class, ``logits_c * s_c`` (their ``TauNormClassifier``
  in ``cls_lws.yaml``), starting from 1.

Both are pure functions of cached tensors here: the backbone never runs. The hyper-parameters default to the
authors' ImageNet-LT configs (facebookresearch/classifier-balancing ``config/ImageNet_LT/cls_crt.yaml`` and
``cls_lws.yaml``): SGD, momentum 0.9, weight decay 5e-4, lr 0.2 at batch 512, cosine to 0, class-aware sampling
with 4 images per class visit (``data/ClassAwareSampler.py``), 10 epochs for cRT and 5 for LWS, an epoch being
as many samples as the training set has (``run_networks.py``: ``epoch_steps = N // batch_size``).
Departures, on purpose: the cosine is stepped after each epoch (theirs steps first, so their last epoch trains
at lr 0); the features are the frozen backbone's in eval mode (theirs keep BatchNorm in training mode, so its
running statistics drift during the second stage), which is what makes them cacheable; and the inputs are those
cached features, by default un-augmented (``train_feature_passes=1``: every training image once, as the test split
sees it), where theirs run the backbone on a freshly augmented image at every draw. ``train_feature_passes=K``
(K > 1) caches K augmented passes (the training crop and flip, pass k seeded by (seed, k)) and samples from those
K fixed views. lt_kit's fixed rule scores the last epoch's classifier; their code keeps the epoch best on
validation data, which lt_kit scores as the validation row (``evaluation/decoupled.py``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MOMENTUM, WEIGHT_DECAY, SAMPLES_PER_CLASS_VISIT = 0.9, 5e-4, 4     # classifier-balancing's cls_crt.yaml


class ClassAwareSampler:
    """Kang et al.'s ``ClassAwareSampler``: visit the classes in a random order (re-shuffled after each full
    round), take ``samples_per_visit`` consecutive items of the visited class's own random cycle (re-shuffled each
    time it wraps). Every round of visits draws each class equally often. ``draw(n)`` continues where the last
    draw stopped, as their sampler's cycles carry over from one epoch to the next; a draw starts a fresh visit
    (the rest of a visit cut by the end of a draw is skipped, as their generator restarts its visit count)."""

    def __init__(self, labels: Tensor, samples_per_visit: int, generator: torch.Generator):
        labels = labels.cpu()
        classes, counts = torch.unique(labels, return_counts=True)
        self.members = torch.argsort(labels, stable=True).split(counts.tolist())   # each class's indices, ascending
        self.orders = [m.tolist() for m in self.members]
        self.pos = [len(m) for m in self.members]            # at the end: shuffle on first use
        self.class_order, self.ci = [], 0
        self.spv, self.g = samples_per_visit, generator

    def _next_class(self) -> int:
        if self.ci == len(self.class_order):
            self.class_order, self.ci = torch.randperm(len(self.members), generator=self.g).tolist(), 0
        self.ci += 1
        return self.class_order[self.ci - 1]

    def draw(self, n: int) -> Tensor:
        out: list[int] = []
        while len(out) < n:
            k, need = self._next_class(), self.spv
            while need:                                     # one visit: a slice of the class's cycle, wrapping
                if self.pos[k] == len(self.orders[k]):
                    self.orders[k] = self.members[k][torch.randperm(len(self.members[k]), generator=self.g)].tolist()
                    self.pos[k] = 0
                take = self.orders[k][self.pos[k]:self.pos[k] + need]
                out.extend(take)
                self.pos[k] += len(take)
                need -= len(take)
        return torch.tensor(out[:n], dtype=torch.long)


def class_aware_indices(labels: Tensor, n: int, samples_per_visit: int, generator: torch.Generator) -> Tensor:
    """``n`` indices from a fresh :class:`ClassAwareSampler`."""
    return ClassAwareSampler(labels, samples_per_visit, generator).draw(n)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """The lr of 0-based ``epoch`` of ``epochs``: ``lr * (1 + cos(pi * epoch / epochs)) / 2`` (lr at the start,
    never 0 inside the run)."""
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


@dataclass
class Retrained:
    """A second stage's result: the parameters after the last epoch and after the epoch best on the validation
    split (the last one without a split), that epoch, the validation accuracy per epoch, and the seconds taken."""
    last: dict
    best: dict
    best_epoch: int
    val_curve: list
    seconds: float


def retrain(theta: dict, logits_fn: Callable[[dict, Tensor], Tensor], inputs: Tensor, labels: Tensor, *,
            epochs: int, lr: float, batch_size: int, seed: int, epoch_images: int | None = None,
            weight_decay: float = WEIGHT_DECAY,
            val: tuple[Tensor, Tensor] | None = None,
            on_epoch: Callable[[int, dict], None] | None = None) -> Retrained:
    """Train the tensors in ``theta`` (updated in place) so that ``logits_fn(theta, inputs[i])`` classifies
    ``labels[i]``: cross-entropy, SGD (momentum 0.9, ``weight_decay`` on every tensor), cosine lr from ``lr``,
    class-aware batches from one :class:`ClassAwareSampler` seeded by ``seed`` (its cycles run on across epochs),
    ``epoch_images // batch_size`` steps per epoch. ``epoch_images``: the training set's size (default
    ``len(inputs)``; K augmented passes cached as K x N rows still make an epoch of N). ``val``: (inputs, labels)
    scored after each epoch; the best epoch is the first with the highest accuracy (the authors keep their best
    epoch on validation data the same way). ``on_epoch(epoch, theta)``: called after each epoch (1-based) with the
    parameters as they are then, to score them by another rule (e.g. a validation accuracy weighted to a test
    prior) without keeping every epoch's copy; it must not change them (training is unchanged)."""
    t0 = time.time()
    params = list(theta.values())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
    sampler = ClassAwareSampler(labels, SAMPLES_PER_CLASS_VISIT, torch.Generator().manual_seed(seed))
    steps = max(1, (len(inputs) if epoch_images is None else epoch_images) // batch_size)
    snap = lambda: {k: v.detach().clone() for k, v in theta.items()}  # noqa: E731
    best, best_epoch, best_acc, curve = None, epochs, -1.0, []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(lr, epoch, epochs)
        order = sampler.draw(steps * batch_size).view(steps, -1)
        for idx in order:
            loss = torch.nn.functional.cross_entropy(logits_fn(theta, inputs[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            with torch.no_grad():
                on_epoch(epoch + 1, theta)
        if val is not None:
            with torch.no_grad():
                acc = float((logits_fn(theta, val[0]).argmax(1) == val[1]).float().mean())
            curve.append(acc)
            if acc > best_acc:
                best, best_epoch, best_acc = snap(), epoch + 1, acc
    for p in params:
        p.requires_grad_(False)
    last = snap()
    return Retrained(last, best if best is not None else last, best_epoch, curve, time.time() - t0)


def init_linear(num_features: int, num_classes: int, seed: int) -> dict:
    """A freshly initialised linear classifier with bias, as ``torch.nn.Linear`` draws it, from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fc = torch.nn.Linear(num_features, num_classes)
    return {"weight": fc.weight.detach().clone(), "bias": fc.bias.detach().clone()}


def linear_logits(theta: dict, features: Tensor) -> Tensor:
    """cRT's classifier: ``features @ W.T + b``."""
    return torch.addmm(theta["bias"], features, theta["weight"].T)


def scaled_logits(theta: dict, logits: Tensor) -> Tensor:
    """LWS's classifier: the frozen head's logits times one learned scale per class."""
    return logits * theta["scales"]
