"""Seeded random streams: every random draw of a run comes from a generator seeded by (run seed, epoch, stream).

An epoch's draws are then a pure function of its number, so a resumed run draws what the uninterrupted run drew,
and each recipe switch has a stream of its own: turning one on leaves the crops, flips and the others unchanged.
"""
from __future__ import annotations

import torch

STREAMS = {"batches": 0, "policy": 1_111_111, "cutout": 2_222_222, "mix": 7_777_777,
           "crt": 3_333_333, "lws": 4_444_444, "train_features": 5_555_555}
_EPOCH_STRIDE = 1_000_003        # a prime: (seed, epoch) pairs of different runs do not collide in practice


def stream_seed(seed: int, epoch: int, stream: str = "batches") -> int:
    """The integer seed of ``stream`` (one of ``STREAMS``) in ``epoch`` of a run seeded ``seed``."""
    return seed * _EPOCH_STRIDE + epoch + STREAMS[stream]


def epoch_generator(seed: int, epoch: int, stream: str = "batches") -> torch.Generator:
    """A CPU generator for ``stream`` in ``epoch``: the same draws whenever the epoch is (re)run."""
    return torch.Generator().manual_seed(stream_seed(seed, epoch, stream))
