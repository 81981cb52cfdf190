"""The in-memory input path: a whole split as one uint8 tensor on the training device, augmented with
batched, seeded tensor ops (pad-and-crop, horizontal flip, normalise) instead of PIL per image.

Off by default, ``augment.py`` adds AutoAugment/RandAugment and Cutout after the crop and flip.
Random numbers come from a CPU generator seeded by (seed, epoch), so the batches are the same on any device,
in any process of a distributed run, and after a resume.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lt_kit.data.augment import cutout_
from lt_kit.maths.seeds import epoch_generator


class TensorLoader:
    """Iterate ``(images, labels)`` batches of a :class:`~lt_kit.data.TensorSplit` already on ``device``.

    Training mode shuffles every epoch, random-crops with ``pad`` pixels of zero padding (before
    normalisation, as torchvision's ``RandomCrop(padding=4)``), flips half the images, and drops the last
    partial batch (the reference's ``epoch_steps``). With ``world_size > 1``, each rank gets its contiguous
    share of every global batch, augmented exactly as in a one-process run.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, mean, std, train: bool,
                 pad: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 policy=None, cutout: int = 0):
        if train and len(images) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the training split ({len(images)} images)")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.pad, self.seed = batch_size, train, pad, seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.policy, self.cutout = policy, cutout      # augment.py: the modern recipe's switches (off: None, 0)
        dev = images.device
        # x/255 then (x - mean)/std, folded into one multiply and one add
        self._scale = (1 / (255 * torch.tensor(std, device=dev))).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, device=dev) / torch.tensor(std, device=dev)).view(1, -1, 1, 1)
        self._padded: Tensor | None = None       # built on the first training epoch, see _padded_pixels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _normalise(self, x: Tensor) -> Tensor:
        """uint8 (B, C, H, W) in any memory layout -> normalised float32 in the requested layout.

        One pass converts and re-lays out (``copy_``), then multiply and add in place: the same two
        roundings as ``x.float() * scale + shift``, without its two temporaries and the layout copy."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
        return out.copy_(x).mul_(self._scale).add_(self._shift)

    def _padded_pixels(self) -> Tensor:
        """The whole split zero-padded once, as (N*(H+2p)*(W+2p), C) rows of channel values (NHWC).

        Padding once per loader instead of once per batch lets one gather do pad + crop + flip. It costs
        (1 + 2p/H)(1 + 2p/W) times the split's uint8 memory (1.56x for CIFAR), on the same device, and
        assumes ``images`` is not modified in place afterwards."""
        if self._padded is None:
            p = self.pad
            padded = torch.nn.functional.pad(self.images, (p, p, p, p)).permute(0, 2, 3, 1).contiguous()
            self._padded = padded.view(-1, padded.shape[-1])
        return self._padded

    def epoch_draws(self) -> dict:
        """The random numbers of this epoch's training batches, drawn in one go from the (seed, epoch) CPU
        generator in the order the eager loop has always drawn them (the order, then per step: crop rows, crop
        columns, flips, each for the whole global batch): ``idx``, ``dy``, ``dx`` (steps, B) int64 and ``flip``
        (steps, B) bool, on the CPU. The captured step (``fast_step.py``) copies them to the device once per
        epoch and reads one row per step."""
        g = epoch_generator(self.seed, self.epoch)
        n, bs, steps = len(self.images), self.batch_size, len(self)
        perm = torch.randperm(n, generator=g)
        dy, dx, flip = [], [], []
        for _ in range(steps):
            dy.append(torch.randint(0, 2 * self.pad + 1, (bs,), generator=g))
            dx.append(torch.randint(0, 2 * self.pad + 1, (bs,), generator=g))
            flip.append(torch.rand(bs, generator=g) < 0.5)
        return {"idx": perm[:steps * bs].view(steps, bs), "dy": torch.stack(dy), "dx": torch.stack(dx),
                "flip": torch.stack(flip)}

    def crop_flip(self, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
        """Crop-then-flip images ``idx`` by offsets ``dy``, ``dx`` and flags ``flip`` (tensors on the device,
        one per image) in one gather; returns uint8 (B, C, H, W) with NHWC memory. Pure tensor ops with no
        host sync, so it can run inside a CUDA graph."""
        _, _, h, w = self.images.shape
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        pixels = self._padded_pixels()
        dev = pixels.device
        ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
        rows = dy[:, None] + ar_h                                                   # (B, H)
        cols = dx[:, None] + torch.where(flip[:, None], ar_w.flip(0), ar_w)        # crop + flip in one gather
        first = idx[:, None, None] * hp
        out = pixels[(first + rows[:, :, None]) * wp + cols[:, None, :]]           # (B, H, W, C)
        return out.permute(0, 3, 1, 2)                                              # NCHW view, NHWC memory

    def augmented_pass(self, generator: torch.Generator):
        """Every image once, in order, with the training crop and flip drawn from ``generator`` (no policy, no
        Cutout): one augmented pass of the training-feature cache (``evaluation/features.py``)."""
        n, bs, dev = len(self.images), self.batch_size, self.images.device
        for i in range(0, n, bs):
            m = min(bs, n - i)
            dy = torch.randint(0, 2 * self.pad + 1, (m,), generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (m,), generator=generator)
            flip = torch.rand(m, generator=generator) < 0.5
            x = self.crop_flip(torch.arange(i, i + m, device=dev), dy.to(dev), dx.to(dev), flip.to(dev))
            yield self._normalise(x), self.labels[i:i + m]

    def __iter__(self):
        n, bs = len(self.images), self.batch_size
        if not self.train:
            for i in range(0, n, bs):
                yield self._normalise(self.images[i:i + bs]), self.labels[i:i + bs]
            return
        dev = self.images.device
        draws = {k: v.to(dev) for k, v in self.epoch_draws().items()}             # one copy per epoch
        # each recipe switch draws from its own stream, so turning one on leaves the crops, flips and the others
        g_policy = epoch_generator(self.seed, self.epoch, "policy")
        g_cutout = epoch_generator(self.seed, self.epoch, "cutout")
        local = bs // self.world_size
        mine = slice(self.rank * local, (self.rank + 1) * local)
        for s in range(len(self)):
            idx = draws["idx"][s, mine]                                             # same draws on every rank
            x = self.crop_flip(idx, draws["dy"][s, mine], draws["dx"][s, mine], draws["flip"][s, mine])
            if self.policy is not None:                                             # then AutoAugment/RandAugment
                x = self.policy(x, g_policy, bs, mine)
            if self.cutout:                                                         # then Cutout (augment.py)
                cutout_(x, self.cutout, g_cutout, bs, mine)
            yield self._normalise(x), self.labels[idx.to(self.labels.device)]
