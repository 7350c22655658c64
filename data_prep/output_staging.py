"""Build generated outputs in a hidden staging folder, then move them into place by renaming.

Staging folders are named ``<prefix-><host>.<pid>.<token>``. One left behind by a killed
process is removed by the next run that stages into the same folder (see
:func:`remove_stale_staging`): at once when its process ran on this host and is gone; otherwise
(another host, a reused pid, an older name) after ``STALE_AFTER_S`` without any change in its
folders (a live generator keeps adding files, which updates them).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from data_prep.datalist_io import DATALIST_NAME, SUMMARY_NAME, refuse_existing

GENERATED_OUTPUTS = ("images", SUMMARY_NAME, DATALIST_NAME)  # the datalist moves last
STAGING_PATTERNS = (".staging-*", ".retired-*")
STALE_AFTER_S = 3600.0


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


def _process_alive(pid: int) -> bool:
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
    if pid is not None and not _process_alive(pid):
        return True
    return time.time() - _last_change(folder) > STALE_AFTER_S


def remove_stale_staging(parent: str | Path, patterns: Sequence[str] = STAGING_PATTERNS) -> list[Path]:
    """Remove the stale staging folders in ``parent`` whose names match ``patterns``; returns them."""
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


@contextmanager
def staged_output(out_dir: str | Path, overwrite: bool, names: Sequence[str] = GENERATED_OUTPUTS) -> Iterator[Path]:
    """Yield an empty staging folder inside ``out_dir``; on success move ``names`` into ``out_dir``.

    An existing datalist is retired first and the new one moved in last, so a datalist in
    ``out_dir`` always refers to its own complete set of images: a run killed while moving
    leaves no datalist (never a new datalist with old images, or the reverse). On error the
    staging folder is removed and ``out_dir`` is left as it was. Stale staging folders of
    killed runs are removed first.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False (checked before and after).
    """
    out_dir = Path(out_dir)
    refuse_existing([out_dir / name for name in names], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = out_dir / staging_name(".staging-")
    staging.mkdir()
    try:
        yield staging
        refuse_existing([out_dir / name for name in names], overwrite)
        if DATALIST_NAME in names and (staging / DATALIST_NAME).exists():
            (out_dir / DATALIST_NAME).unlink(missing_ok=True)
        for name in names:
            source, target = staging / name, out_dir / name
            if not source.exists():
                continue
            if target.is_dir() and not target.is_symlink():
                retired = out_dir / staging_name(".retired-")
                os.replace(target, retired)
                os.replace(source, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
