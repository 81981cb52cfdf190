"""Run directories: provenance (resolved params, code version), atomic checkpoints, metrics and logs.

A run dir holds ``params.yaml``, ``version.json``, ``checkpoint.pt`` (written atomically every epoch),
``history.json``, ``subset_indices.npy``, ``features.pt`` (the test-feature cache), ``metrics.json``,
``evaluations.jsonl`` (one line per ``test``) and ``log.txt``.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .errors import LtKitError

CHECKPOINT_FORMAT = "lt_kit-checkpoint/1"
CLI_ADVICE = "pass --resume to continue it, --overwrite to replace it, or choose another --run-dir"
MARKERS = ("params.yaml", "checkpoint.pt", "metrics.json")     # what makes a folder "an earlier run"


def code_version() -> dict[str, Any]:
    """lt_kit's version and, inside a git checkout, its commit and whether the tree was modified."""
    from . import __version__
    out: dict[str, Any] = {"lt_kit": __version__, "torch": torch.__version__, "python": platform.python_version()}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here)], cwd=here,
                                   capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(json.dumps(obj, indent=1, allow_nan=True).encode()))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return any((self.path / m).exists() for m in MARKERS)

    def check(self, params: dict, *, resume: bool = False, overwrite: bool = False, advice: str = CLI_ADVICE) -> None:
        """Raise if this folder cannot take the run: an earlier run without --resume/--overwrite, nothing to
        resume, or a resume with other parameters. ``advice`` says how the caller's user sets those options
        (the notebook's words differ from the CLI's). Writes nothing."""
        if resume:
            if not (self / "checkpoint.pt").is_file():
                raise LtKitError(f"nothing to resume in {self.path}: no checkpoint.pt (drop --resume to start)")
            old = self.params()
            changed = sorted(k for k in params if k not in ("epochs", "device", "num_workers", "eval_every")
                             and old.get(k) != params[k])
            if changed:
                raise LtKitError(f"cannot resume {self.path} with different parameters: "
                                 + ", ".join(f"{k}={old.get(k)!r}->{params[k]!r}" for k in changed))
        elif self.exists() and not overwrite:
            raise LtKitError(f"{self.path} holds an earlier run; {advice}")

    def prepare(self, params: dict, *, resume: bool = False, overwrite: bool = False) -> None:
        """Create the folder for a new run (an earlier one is moved aside with ``overwrite``), write provenance."""
        self.check(params, resume=resume, overwrite=overwrite)
        if not resume and self.exists():
            stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
            backup = self.path.with_name(f"{self.path.name}.replaced-{stamp}")
            while backup.exists():
                n += 1
                backup = self.path.with_name(f"{self.path.name}.replaced-{stamp}-{n}")
            shutil.move(str(self.path), backup)           # overwrite keeps the old run beside the new one
            self.log(f"previous run moved to {backup}")
        self.path.mkdir(parents=True, exist_ok=True)
        (self / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_json(self / "version.json", {**code_version(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def params(self) -> dict:
        p = self / "params.yaml"
        if not p.is_file():
            raise LtKitError(f"{self.path} is not an lt_kit run dir (no params.yaml); train into it first")
        return yaml.safe_load(p.read_text())

    def log(self, line: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self / "log.txt", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def save_indices(self, idx) -> None:
        atomic_write_bytes(self / "subset_indices.npy", lambda f: np.save(f, np.asarray(idx)))

    def save_checkpoint(self, state: dict, name: str = "checkpoint.pt") -> None:
        atomic_write_bytes(self / name, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(path: str | Path, signature: dict | None = None) -> dict:
    """Load an lt_kit checkpoint (tensors and plain data only: ``weights_only``) and, given the model's
    ``signature()``, refuse one that was trained for another architecture, head or class count."""
    path = Path(path)
    if not path.is_file():
        raise LtKitError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LtKitError(f"{path} is not a readable lt_kit checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise LtKitError(f"{path} is not an lt_kit checkpoint (the reference's .pth files must be retrained)")
    if signature is not None and ckpt["signature"] != signature:
        diff = ", ".join(f"{k} {ckpt['signature'].get(k)!r} (checkpoint) vs {v!r} (this run)"
                         for k, v in signature.items() if ckpt["signature"].get(k) != v)
        raise LtKitError(f"{path} belongs to another model: {diff}")
    return ckpt
