"""Check that every referenced image exists and opens with the reader its suffix calls for."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
from PIL import Image
from tqdm.auto import tqdm

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_LISTED = 10


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it is fine.

    Raster files are opened and verified by Pillow (the library behind MONAI's ``PILReader``);
    NIfTI files are opened by nibabel (MONAI's ``NibabelReader``) and their header and data
    shape are read. Pixel data is not decoded, so checking is fast.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    suffix = _suffix(path)
    try:
        if suffix in RASTER_SUFFIXES:
            with Image.open(path) as image:
                image.verify()
        elif suffix in NIFTI_SUFFIXES:
            image = nib.load(path)
            if not all(int(s) > 0 for s in image.shape):
                return f"empty NIfTI shape {image.shape}"
        else:
            return f"unsupported suffix {suffix!r} (allowed: {', '.join(RASTER_SUFFIXES + NIFTI_SUFFIXES)})"
    except Exception as err:  # any decoder error means "unreadable"
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def find_bad_images(paths: Sequence[str | Path], progress: bool = True) -> dict[int, str]:
    """Positions of ``paths`` that are missing or unreadable, mapped to the reason."""
    problems = {}
    for index, path in enumerate(tqdm(paths, desc="checking images", unit="file", disable=not progress)):
        reason = image_problem(path)
        if reason is not None:
            problems[index] = reason
    return problems


def bad_images_message(paths: Sequence[str | Path], problems: dict[int, str], total: int) -> str:
    """One readable message: how many files are bad, and the first few with their reason."""
    shown = "; ".join(f"{paths[i]} ({problems[i]})" for i in sorted(problems)[:MAX_LISTED])
    more = f" and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{len(problems)} of {total} referenced image file(s) are missing or unreadable: {shown}{more}"
