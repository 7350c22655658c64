"""Check that every referenced image exists and decodes fully, with finite values only."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_THREADS = 8


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _decoded(path: Path, suffix: str) -> np.ndarray:
    """Every pixel/voxel of ``path``, decoded by the library MONAI's reader for it uses."""
    if suffix in RASTER_SUFFIXES:
        with Image.open(path) as image:
            image.load()  # decodes all pixel data: raises on truncated or corrupt files
            return np.asarray(image)
    return np.asanyarray(nib.load(path).dataobj)  # reads and decompresses the whole volume


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it is fine.

    Raster files are fully decoded by Pillow (the library behind MONAI's ``PILReader``), NIfTI
    files by nibabel (MONAI's ``NibabelReader``), so a truncated, zero-byte or corrupt file is
    found here and not in the middle of training; floating-point data must be finite (no NaN/Inf).
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    suffix = _suffix(path)
    if suffix not in RASTER_SUFFIXES + NIFTI_SUFFIXES:
        return f"unsupported suffix {suffix!r} (allowed: {', '.join(RASTER_SUFFIXES + NIFTI_SUFFIXES)})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        data = _decoded(path, suffix)
    except Exception as err:  # any decoder error means "unreadable"
        return f"unreadable ({type(err).__name__}: {err})"
    if data.size == 0:
        return f"no pixel data (shape {data.shape})"
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            return f"{bad} of {data.size} values are NaN or infinite"
    return None


def find_bad_images(paths: Sequence[str | Path], progress: bool = True) -> dict[int, str]:
    """Positions of ``paths`` that are missing, unreadable or non-finite, mapped to the reason.

    Files are decoded on a few threads (the decoders release the GIL); every file is checked.
    """
    threads = max(1, min(MAX_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        reasons = list(
            tqdm(
                pool.map(image_problem, paths),
                total=len(paths),
                desc="checking images",
                unit="file",
                disable=not progress,
            )
        )
    return {index: reason for index, reason in enumerate(reasons) if reason is not None}


# bad files named in a message; the rest are counted
SHOWN = 5


def bad_images_message(paths: Sequence[str | Path], problems: dict[int, str], total: int) -> str:
    """One message with how many files are bad and the first :data:`SHOWN` of them with their reason."""
    bad = sorted(problems)
    listed = "; ".join(f"{paths[i]} ({problems[i]})" for i in bad[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return f"{len(problems)} of {total} referenced image file(s) are missing, unreadable or not finite, e.g. {listed}{more}"
