"""The in-memory input path: a whole split as one uint8 tensor on the training device, augmented with
batched, seeded tensor ops (pad-and-crop, horizontal flip, normalise) instead of PIL per image.

Random numbers come from a CPU generator seeded by (seed, epoch), so the batches are the same on any device,
in any process of a distributed run, and after a resume.
"""
from __future__ import annotations

import torch
from torch import Tensor


class TensorLoader:
    """Iterate ``(images, labels)`` batches of a :class:`~lt_kit.data.TensorSplit` already on ``device``.

    Training mode shuffles every epoch, random-crops with ``pad`` pixels of zero padding (before
    normalisation, as torchvision's ``RandomCrop(padding=4)``), flips half the images, and drops the last
    partial batch (the reference's ``epoch_steps``). With ``world_size > 1``, each rank gets its contiguous
    share of every global batch, augmented exactly as in a one-process run.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, mean, std, train: bool,
                 pad: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False):
        if train and len(images) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the training split ({len(images)} images)")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.pad, self.seed = batch_size, train, pad, seed
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        dev = images.device
        # x/255 then (x - mean)/std, folded into one multiply-add
        self._scale = (1 / (255 * torch.tensor(std, device=dev))).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, device=dev) / torch.tensor(std, device=dev)).view(1, -1, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _normalise(self, x: Tensor) -> Tensor:
        x = x.float() * self._scale + self._shift
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        b, _, h, w = x.shape
        p = self.pad
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
        ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        rows = dy[:, None] + ar_h                                                   # (B, H)
        cols = dx[:, None] + torch.where(flip[:, None], ar_w.flip(0), ar_w)        # crop + flip in one gather
        padded = torch.nn.functional.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)      # (B, H+2p, W+2p, C)
        out = padded[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)                                              # NCHW view, NHWC memory

    def __iter__(self):
        n, bs = len(self.images), self.batch_size
        if not self.train:
            for i in range(0, n, bs):
                yield self._normalise(self.images[i:i + bs]), self.labels[i:i + bs]
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=g)
        local = bs // self.world_size
        for s in range(len(self)):
            idx = perm[s * bs:(s + 1) * bs]
            x = self._augment(self.images[idx.to(self.images.device)], g)           # same draws on every rank
            mine = slice(self.rank * local, (self.rank + 1) * local)
            yield self._normalise(x[mine]), self.labels[idx[mine].to(self.labels.device)]
