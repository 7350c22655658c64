"""One run per output folder at a time: a lock file holding the owner's pid and host.

A second run on the same folder stops at start-up with a message naming the folder and the run
that holds it. A lock left by a killed run (its pid no longer runs on this host) is stale: it is
replaced, with a warning. A lock from another host cannot be checked; its message says how to
remove it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline.atomic import process_alive

LOCK_FILE = ".lock"
logger = logging.getLogger(__name__)


class OutputInUseError(ValueError):
    """Another live run holds the output folder's lock."""


def _holder(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def acquire(folder: str | Path, what: str = "run") -> Path | None:
    """Take ``folder``'s lock (creating the folder); returns the lock file, released at exit.

    Under torchrun only rank 0 takes it (None elsewhere). A lock held by this same process
    (a workflow that failed in it earlier) is taken over.

    Raises:
        OutputInUseError: a live run, or one on another host, holds the lock.
    """
    if os.environ.get("RANK", "0") != "0":
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "what": what, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}  # fmt: skip
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None and time.time() - _mtime(path) < 10:
                time.sleep(0.2)  # being written by a run starting right now
                continue
            if holder is not None and holder.get("host") != host:
                raise OutputInUseError(_in_use_message(folder, path, holder, host)) from None
            if holder is not None and holder["pid"] != os.getpid():
                if process_alive(holder["pid"]):
                    raise OutputInUseError(_in_use_message(folder, path, holder, host)) from None
                logger.warning(
                    "%s: removing the stale lock of pid %s (no longer running)", folder, holder["pid"]
                )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        atexit.register(release, path)
        return path
    raise OutputInUseError(f"{folder}: could not take the lock {path} (another run keeps taking it)")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _in_use_message(folder: Path, path: Path, holder: dict, host: str) -> str:
    who = f"pid {holder['pid']} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command', '?')}"
    if holder.get("host") != host:
        return (f"{folder} is in use by a {holder.get('what', 'run')} on another host ({who}); wait for it, or "
                f"choose another output folder. If that run is gone, delete {path}")  # fmt: skip
    return (f"{folder} is in use by another {holder.get('what', 'run')} ({who}); wait for it to finish, or choose "
            "another output folder")  # fmt: skip


def release(path: str | Path | None) -> None:
    """Remove the lock file ``path`` if this process holds it (no-op otherwise)."""
    if path is None:
        return
    path = Path(path)
    holder = _holder(path)
    if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def release_folder(folder: str | Path) -> None:
    """:func:`release` of ``folder``'s lock (for a config's ``finalize``)."""
    release(Path(folder) / LOCK_FILE)


@contextmanager
def locked(folder: str | Path, what: str = "run"):
    """Hold ``folder``'s lock for the ``with`` block."""
    path = acquire(folder, what)
    try:
        yield path
    finally:
        release(path)
