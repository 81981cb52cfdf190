"""Run directories: provenance (resolved params, code version), atomic checkpoints, metrics and logs.

A run dir holds ``params.yaml``, ``version.json`` (the code it ran; after a resume, the earlier sessions' under
``earlier``), ``checkpoint.pt`` (written atomically every epoch),
``history.json``, ``subset_indices.npy`` and its checksum ``subset.json``, ``pretrained.json`` (with
``pretrained``: the weights' source, sha256 and key mapping), ``features.pt`` (the test-feature
cache), ``metrics.json``, ``evaluations.jsonl`` (one line per ``test``) and ``log.txt``.
"""
from __future__ import annotations

import hashlib
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

from lt_kit.errors import LtKitError, on_every_rank

CHECKPOINT_FORMAT = "lt_kit-checkpoint/1"
CLI_ADVICE = "pass --resume to continue it, --overwrite to replace it, or choose another --run-dir"
MARKERS = ("params.yaml", "checkpoint.pt", "metrics.json")     # what makes a folder "an earlier run"


def code_version() -> dict[str, Any]:
    """lt_kit's version and, inside a git checkout, its commit and whether the tree was modified."""
    from lt_kit import __version__
    out: dict[str, Any] = {"lt_kit": __version__, "torch": torch.__version__, "python": platform.python_version()}
    here = Path(__file__).resolve().parents[1]           # the lt_kit package folder
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
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:            # disk full, quota, read-only: the old file is untouched, say so
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
        raise LtKitError(f"cannot write {path} ({e.strerror or type(e).__name__}); {kept}; "
                         "free some space and run again") from None
    except RuntimeError as e:       # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        if "write" not in str(e).lower() and "file" not in str(e).lower():
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
        raise LtKitError(f"cannot write {path} ({str(e).splitlines()[0][:120]}); {kept}; "
                         "free some space and run again") from None


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
        (the notebook's words differ from the CLI's). The rules are in ``guard.py``. Writes nothing."""
        import lt_kit.runs.guard as guard
        try:
            guard.check(self, params, resume=resume, overwrite=overwrite, advice=advice)
        except LtKitError as e:
            raise on_every_rank(e) from None          # every rank checks the same folder: rank 0 reports

    def prepare(self, params: dict, *, resume: bool = False, overwrite: bool = False) -> None:
        """Create the folder for a new run (an earlier one is moved aside with ``overwrite``), write provenance."""
        from lt_kit.runs.guard import no_complete_epoch
        from lt_kit.runs.lock import LOCK_NAME
        self.check(params, resume=resume, overwrite=overwrite)
        if not resume and self.exists() and no_complete_epoch(self.path):
            self.log("restart: the earlier start had no complete epoch")      # nothing to keep
        elif not resume and self.exists():
            stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
            backup = self.path.with_name(f"{self.path.name}.replaced-{stamp}")
            while backup.exists():
                n += 1
                backup = self.path.with_name(f"{self.path.name}.replaced-{stamp}-{n}")
            backup.mkdir(parents=True)                    # overwrite keeps the old run beside the new one;
            for entry in self.path.iterdir():             # the writer's lock stays with the new run
                if entry.name != LOCK_NAME:
                    shutil.move(str(entry), backup / entry.name)
            self.log(f"previous run moved to {backup}")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self / "params.yaml", lambda f: f.write(yaml.safe_dump(params, sort_keys=False).encode()))
        version = {**code_version(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if resume and (self / "version.json").is_file():     # a resumed run keeps the code it trained under before
            try:
                before = read_json(self / "version.json")
            except ValueError:
                before = None
            if isinstance(before, dict):
                version["earlier"] = before.pop("earlier", []) + [before]
        write_json(self / "version.json", version)

    def params(self) -> dict:
        p = self / "params.yaml"
        if not p.is_file():
            raise LtKitError(f"{self.path} is not an lt_kit run dir (no params.yaml); train into it first")
        try:
            out = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise LtKitError(f"{p} is not valid YAML ({str(e).splitlines()[0]}); restore it "
                             "(checkpoint.pt holds the parameters the run was trained with)") from None
        if not isinstance(out, dict):
            raise LtKitError(f"{p} must hold the run's parameters as key: value; restore it")
        return out

    def log(self, line: str) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self / "log.txt", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        except OSError as e:
            raise LtKitError(f"cannot append to {self / 'log.txt'} ({e.strerror or type(e).__name__}); "
                             "free some space and run again") from None

    def save_indices(self, idx, val_idx=None) -> None:
        """Write the drawn subset (``subset_indices.npy``), the validation split's indices (``val_indices.npy``)
        when the run has one, and their checksum (``subset.json``)."""
        atomic_write_bytes(self / "subset_indices.npy", lambda f: np.save(f, np.asarray(idx)))
        if val_idx is not None:
            atomic_write_bytes(self / "val_indices.npy", lambda f: np.save(f, np.asarray(val_idx)))
        write_json(self / SUBSET_JSON, subset_checksum(self.path, use_record=False))

    def save_checkpoint(self, state: dict, name: str = "checkpoint.pt") -> None:
        atomic_write_bytes(self / name, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


PRETRAINED = "pretrained.json"      # the pretrained weights' source, sha256 and key mapping (pretrained.py)
EVALUATED = "evaluated.pt"          # the weights and direction that metrics.json and the feature caches come from
SUBSET_JSON = "subset.json"
SUBSET_FILES = ("subset_indices.npy", "val_indices.npy")   # the indices a run drew; val only with a val split


def indices_checksum(arrays: dict[str, Any]) -> str:
    """sha256 (hex) of named index arrays: each name, then its values as little-endian int64, in the order
    given. The dtype a file was saved with (int32, int64) does not change it."""
    h = hashlib.sha256()
    for name, idx in arrays.items():
        h.update(f"{name}:".encode())
        h.update(np.ascontiguousarray(np.asarray(idx).ravel(), dtype="<i8").tobytes())
    return h.hexdigest()


def subset_checksum(run_dir: str | Path, *, use_record: bool = True) -> dict:
    """``{"sha256", "n", "files"}`` of the indices a run drew (``SUBSET_FILES`` present in ``run_dir``).

    Read from ``subset.json`` when it covers the same files (written by ``train``), else computed from the
    ``.npy`` files (runs written before it existed). Raises ``LtKitError`` when the run saved no indices."""
    run_dir = Path(run_dir)
    present = [f for f in SUBSET_FILES if (run_dir / f).is_file()]
    if use_record and (run_dir / SUBSET_JSON).is_file():
        try:
            record = read_json(run_dir / SUBSET_JSON)
            if isinstance(record, dict) and record.get("files") == present and record.get("sha256"):
                return record
        except (OSError, ValueError):
            pass                                      # unreadable: recompute below
    if SUBSET_FILES[0] not in present:
        raise LtKitError(f"{run_dir} has no {SUBSET_FILES[0]} (written by lt_kit's train)")
    try:
        arrays = {f: np.load(run_dir / f, allow_pickle=False) for f in present}
    except (OSError, ValueError) as e:
        raise LtKitError(f"{run_dir}: unreadable subset indices ({type(e).__name__})") from None
    return {"sha256": indices_checksum(arrays), "n": int(np.asarray(arrays[SUBSET_FILES[0]]).size), "files": present}


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
