"""Folders a failed call takes back: the ones it created, and only while they are still empty (a failed download,
a run that wrote nothing). Nothing a user had before the call is ever removed."""
from __future__ import annotations

from pathlib import Path


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and each of its parents that does not exist yet, deepest first: the folders a
    ``makedirs(path)`` would create (so a failed call can take back exactly those, and nothing of the user's)."""
    out, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_created(dirs: list[Path], files: list[Path] = ()) -> None:
    """Undo a failed download: delete ``files`` (what the call wrote, such as a partial archive), then each of
    ``dirs`` (deepest first) while it is an empty folder. ``rmdir`` refuses a folder with anything in it, so a
    folder that holds something is kept, and the folders above it with it."""
    for f in files:
        Path(f).unlink(missing_ok=True)
    for d in dirs:
        try:
            d.rmdir()
        except OSError:              # not empty (or already gone, or not ours to remove): keep it and its parents
            break
