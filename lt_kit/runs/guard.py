"""What a folder must be before ``train`` writes it, and what a resume may change (``RunDir.check``).

- A new run goes into a missing or empty folder, or one holding only lt_kit's own run files: a folder
  with unrelated files is refused (they would be mixed with the run, and ``overwrite`` would move them).
- A run with no complete epoch (``params.yaml`` but no ``checkpoint.pt``) has nothing to keep: ``train``
  restarts it, with or without ``resume``.
- A resume trains the remaining epochs of the recipe it started with: any change except ``RESUME_FREE``
  (where it runs, how fast it reads) is refused, ``epochs`` included (it moves the lr and mu curves of
  the epochs still to run), and so is a ``params.yaml`` edited after the checkpoint was written.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lt_kit.errors import LtKitError

# how a step runs, not what it computes; and the second stage's settings (cRT/LWS), which read the finished run
RESUME_FREE = ("device", "num_workers", "eval_every", "fast_step", "download", "train_feature_passes",
               "crt_epochs", "crt_lr", "crt_batch_size", "crt_weight_decay", "lws_epochs", "lws_lr", "lws_batch_size",
               "lws_weight_decay")
RUN_FILES = {"params.yaml", "version.json", "checkpoint.pt", "best.pt", "history.json", "subset_indices.npy",
             "val_indices.npy", "subset.json", "features.pt", "val_features.pt", "train_features.pt", "evaluated.pt",
             "metrics.json", "evaluations.jsonl", "log.txt", "figures", "pretrained.json"}


def foreign_files(path: Path) -> list[str]:
    """Visible entries of ``path`` that are not lt_kit run files (hidden ones, such as the lock, are skipped)."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".") and p.name not in RUN_FILES)


def holds_cwd(path: Path) -> bool:
    """True when ``path`` is the current folder or one of its parents (it cannot be moved aside)."""
    try:
        here, target = Path.cwd().resolve(), path.resolve()
    except OSError:
        return False
    return here == target or target in here.parents


def no_complete_epoch(path: Path) -> bool:
    """A run that was started but stopped before its first checkpoint: nothing to resume, nothing to keep."""
    return (path / "params.yaml").is_file() and not (path / "checkpoint.pt").exists() \
        and not (path / "metrics.json").exists()


def recorded_params(checkpoint: Path) -> dict | None:
    """The parameters stored in a checkpoint (memory-mapped: the tensors are not read), or None."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None                  # unreadable: fit's load_checkpoint gives the error with the file named
    p = ckpt.get("params") if isinstance(ckpt, dict) else None
    return p if isinstance(p, dict) else None


def diff(old: dict, new: dict) -> list[str]:
    """``key=old->new`` for every parameter that differs, except ``RESUME_FREE``. A parameter one side lacks
    (a run from an lt_kit before it existed) counts as its default, which is what that run used."""
    from lt_kit.config import DEFAULTS
    from lt_kit.data.datasets import DATASETS

    def get(d, k):
        return d[k] if k in d else DEFAULTS.get(k)
    free = set(RESUME_FREE)
    ds = get(new, "dataset")
    if ds in DATASETS and DATASETS[ds].kind == "tensor":
        free.add("data_root")        # where CIFAR / digits lie, not which images: the subset files pin those
    keys = sorted(k for k in set(old) | set(new) if k not in free and get(old, k) != get(new, k))
    return [f"{k}={get(old, k)!r}->{get(new, k)!r}" for k in keys]


def check(run, params: dict, *, resume: bool, overwrite: bool, advice: str) -> None:
    """Raise ``LtKitError`` if ``run`` (a ``RunDir``) cannot take this run; see the module docstring."""
    path = run.path
    if path.exists() and not path.is_dir():
        raise LtKitError(f"run dir {path} is a file; name a folder (for example runs/NAME)")
    if overwrite and path.exists() and holds_cwd(path):
        raise LtKitError(f"run dir {path} is the current folder (or holds it) and cannot be moved aside; "
                         f"train into a subfolder (for example runs/NAME)")
    if not run.exists():
        foreign = foreign_files(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise LtKitError(f"{path} is not an lt_kit run but holds other files ({shown}); train into a new or "
                             f"empty folder (for example runs/NAME)")
        if resume:
            raise LtKitError(f"nothing to resume in {path}: no run there (drop --resume / resume=True to start one)")
        return
    if no_complete_epoch(path):
        return                       # stopped in its first epoch: it restarts, resume or not
    if not resume:
        if not overwrite:
            raise LtKitError(f"{path} holds an earlier run; {advice}")
        return
    if not (path / "checkpoint.pt").is_file():
        raise LtKitError(f"nothing to resume in {path}: no checkpoint.pt, but a finished run's metrics.json; "
                         f"use overwrite to replace it")
    on_disk = run.params()
    recorded = recorded_params(path / "checkpoint.pt")
    if recorded is not None:
        edited = diff(recorded, on_disk)
        if edited:
            raise LtKitError(f"params.yaml in {path} was edited after the run started ({', '.join(edited)}, "
                             f"checkpoint.pt -> params.yaml); restore it, or start a new run with the new values")
    changed = diff(recorded or on_disk, params)
    if changed:
        why = ("; a resumed run keeps the epochs it was started with (they shape the lr and mu curves)"
               if any(c.startswith("epochs=") for c in changed) else "")
        raise LtKitError(f"cannot resume {path} with different parameters: {', '.join(changed)}{why}")


def env_rank() -> int:
    """This process's rank under torchrun (0 outside it), read before the process group exists."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
