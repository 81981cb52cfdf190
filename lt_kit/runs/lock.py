"""One writer per run dir: ``train`` (rank 0) holds a lock file naming its process (pid, host, start).

The lock is ``<run dir>/.lock``, created atomically (written beside it, then hard-linked into place, so it
is never seen half-written). A second writer is refused with a message naming the first. A lock whose
process is gone (same host, pid no longer alive, or the pid now belongs to a later process) is stale and
taken over, so a run killed with ``kill -9`` can be resumed; a lock from another host cannot be checked and
is reported with the file to delete.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from lt_kit.errors import LtKitError
from lt_kit.folders import missing_dirs, remove_created

LOCK_NAME = ".lock"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), which tells a reused pid apart; else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # someone else's process: alive
        return True
    except OSError:
        return False
    return True


def _owner_line(owner: dict) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')}"
            + (f", since {owner['since']}" if owner.get("since") else ""))


class RunLock:
    """``with RunLock(run_dir):`` holds the run dir's lock for the block; ``enabled=False`` does nothing
    (every rank but 0 under torchrun). The run dir is created if needed, and removed again on release
    when this lock created it and nothing else was written into it (a refused run leaves no folder)."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.enabled = enabled
        self.held = False
        self._created_dir: list[Path] = []      # the folders acquire() made (deepest first)

    def owner(self) -> dict | None:
        """The holder recorded in the lock file (``{}`` when unreadable), or None without a lock."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            owner = json.loads(text)
            return owner if isinstance(owner, dict) else {}
        except ValueError:
            return {}

    def busy(self) -> bool:
        """True while a lock file names a writer not provably gone (another process may be writing the run)."""
        owner = self.owner()
        return owner is not None and not self._stale(owner)

    def _stale(self, owner: dict) -> bool:
        """True when the recorded writer is provably gone (only checkable on this host)."""
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
            return False
        pid = owner["pid"]
        if not _alive(pid):
            return True
        start = _process_start(pid)
        return start is not None and owner.get("start") is not None and start != owner["start"]

    def acquire(self) -> None:
        if not self.enabled or self.held:
            return
        if not self.dir.exists():
            created = missing_dirs(self.dir)     # the run dir and any parent it needs (runs/): all ours to take back
            try:
                self.dir.mkdir(parents=True)
                self._created_dir = created
            except FileExistsError:
                pass
            except OSError as e:
                raise LtKitError(f"cannot create run dir {self.dir} ({type(e).__name__}: {e})") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = self.dir / f"{LOCK_NAME}.{me['pid']}.tmp"
        try:
            tmp.write_text(json.dumps(me))
            for _ in range(3):
                try:
                    os.link(tmp, self.path)          # atomic, and fails if a lock is there
                    self.held = True
                    return
                except FileExistsError:
                    owner = self.owner()
                    if owner is None:                # released meanwhile: try again
                        continue
                    if owner and self._stale(owner):
                        self.path.unlink(missing_ok=True)
                        continue
                    self._give_up()
                    if not owner:
                        raise LtKitError(f"{self.dir} is locked by {self.path}, which cannot be read; if no "
                                         f"lt_kit train is writing this run, delete {self.path}") from None
                    raise LtKitError(f"{self.dir} is being written by another lt_kit train ({_owner_line(owner)}); "
                                     f"wait for it to end or stop it (if that process is gone, delete "
                                     f"{self.path})") from None
            self._give_up()
            raise LtKitError(f"could not take the lock {self.path}; try again")
        except OSError as e:
            self._give_up()
            raise LtKitError(f"cannot write the lock {self.path} ({type(e).__name__}: {e})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _give_up(self) -> None:
        if self._created_dir:
            try:
                (self.dir / f"{LOCK_NAME}.{os.getpid()}.tmp").unlink(missing_ok=True)
            except OSError:
                pass
            remove_created(self._created_dir)
            self._created_dir = []

    def release(self) -> None:
        if not self.held:
            return
        owner = self.owner()
        if owner and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
        if self._created_dir:                    # only while empty: a run that wrote nothing leaves nothing
            remove_created(self._created_dir)
            self._created_dir = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
