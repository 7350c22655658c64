"""Build generated outputs in a hidden staging folder, then move them into place by renaming."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from data_prep.datalist_io import DATALIST_NAME, SUMMARY_NAME, refuse_existing

GENERATED_OUTPUTS = ("images", SUMMARY_NAME, DATALIST_NAME)  # the datalist moves last


@contextmanager
def staged_output(out_dir: str | Path, overwrite: bool, names: Sequence[str] = GENERATED_OUTPUTS) -> Iterator[Path]:
    """Yield an empty staging folder inside ``out_dir``; on success move ``names`` into ``out_dir``.

    The datalist is moved last, so a datalist in ``out_dir`` always refers to a complete set of
    images. On error the staging folder is removed and ``out_dir`` is left as it was.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False (checked before and after).
    """
    out_dir = Path(out_dir)
    refuse_existing([out_dir / name for name in names], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging
        refuse_existing([out_dir / name for name in names], overwrite)
        for name in names:
            source, target = staging / name, out_dir / name
            if not source.exists():
                continue
            if target.is_dir() and not target.is_symlink():
                retired = out_dir / f".retired-{uuid.uuid4().hex}"
                os.replace(target, retired)
                os.replace(source, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
