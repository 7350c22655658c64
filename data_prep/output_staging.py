"""Build generated outputs in a hidden staging folder, then move them into place by renaming.

Staging folders are named as :func:`pipeline.atomic.staging_name` names them; one left behind
by a killed process is removed by the next run that stages into the same folder
(:func:`pipeline.atomic.remove_stale_staging`).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from data_prep.datalist_io import DATALIST_NAME, SUMMARY_NAME, refuse_existing
from pipeline.atomic import remove_stale_staging, staging_name

GENERATED_OUTPUTS = ("images", SUMMARY_NAME, DATALIST_NAME)  # the datalist moves last
STAGING_PATTERNS = (".staging-*", ".retired-*")


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
    remove_stale_staging(out_dir, STAGING_PATTERNS)
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
