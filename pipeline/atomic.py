"""Write files so that readers never see half of one: a temporary name, then a rename.

Folders are built the same way, in a staging folder beside the target named
``<prefix><host>.<pid>.<token>`` (:func:`staging_name`). One left behind by a killed process is
removed by the next run that stages into the same folder (:func:`remove_stale_staging`): at once
when its process ran on this host and is gone; otherwise (another host, a reused pid, an older
name) after ``STALE_AFTER_S`` without any change in its folders (a live writer keeps adding
files, which updates them). :func:`write_error_message` turns a full or read-only disk into the
one line the command lines print.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

STALE_AFTER_S = 3600.0
# OSErrors that mean an output cannot be written: the command lines print one line, exit 2
WRITE_ERRORS = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EDQUOT: "disk quota exceeded"}  # fmt: skip


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(content, path: str | Path) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically (NaN and infinities become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(content), indent=2, allow_nan=False))
    return Path(path)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(frame, path: str | Path) -> Path:
    """Write a pandas DataFrame to ``path`` (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_error_message(err: BaseException, default_where: str = "the output folder") -> str | None:
    """One line for an error that means an output cannot be written (a full or read-only disk, no
    permission; torch.save's ``PytorchStreamWriter failed writing file``), looked up along the
    error's causes; None for any other error (its traceback is needed)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRORS:
            where = err.filename or default_where
            return f"cannot write {where}: {WRITE_ERRORS[err.errno]} ({err.strerror})"
        text = str(err)
        if isinstance(err, RuntimeError) and ("PytorchStreamWriter failed" in text or "inline_container" in text):
            return (f"a model or checkpoint could not be written in {default_where} "
                    f"({text.splitlines()[0][:120]}): disk full or read-only?")  # fmt: skip
        err = err.__cause__ or err.__context__
    return None


def staging_name(prefix: str) -> str:
    """A fresh folder name ``<prefix><host>.<pid>.<token>`` that records which process owns it.

    ``prefix`` ends with ``-`` (e.g. ``.staging-``).
    """
    return f"{prefix}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"


def _owner_pid_here(name: str) -> int | None:
    """The pid in a :func:`staging_name` made on this host, or None (other host or other form)."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 32:
        return None
    return int(parts[1]) if parts[0].endswith("-" + socket.gethostname()) else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (True when that cannot be told)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the age instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists under another user, or cannot tell: assume alive
    return True


def _last_change(folder: Path) -> float:
    """Newest modification time of ``folder`` and the folders inside it (files written update them)."""
    newest = folder.stat().st_mtime
    for parent, dirs, _ in os.walk(folder):
        for name in dirs:
            try:
                newest = max(newest, os.stat(os.path.join(parent, name)).st_mtime)
            except OSError:
                pass
    return newest


def is_stale(folder: Path) -> bool:
    """Whether a staging folder belongs to no running process (see the module docstring)."""
    pid = _owner_pid_here(folder.name)
    if pid is not None and not process_alive(pid):
        return True
    return time.time() - _last_change(folder) > STALE_AFTER_S


def remove_stale_staging(parent: str | Path, patterns: Sequence[str]) -> list[Path]:
    """Remove the stale staging folders in ``parent`` whose names match ``patterns`` (fnmatch);
    returns them."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for entry in sorted(parent.iterdir()):
        if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink() and is_stale(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except FileNotFoundError:
            pass  # its owner finished meanwhile
    return removed
