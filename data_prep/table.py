"""Read your own images: a folder of image files plus a CSV of file names and labels, into a datalist.

The CSV needs a column with each image's file name (relative to ``image_root``, ``image`` by
default) and a 0/1 ``label`` column; ``id`` (default: the file name without its suffix) and
``bias`` (0/1: the image already carries a shortcut; default 0, none known) are optional, and
every other column named in ``attributes`` is copied into the items. The intensity range the
bundles scale with is recorded as ``metadata.stored_intensity_range`` from the image type (8-bit
[0, 255], 16-bit [0, 65535]) where every image has the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.datalist_build import build_datalist
from data_prep.splits import SplitSpec

# stored range of integer image types (PIL modes) recorded for the bundles' intensity scaling
TYPE_RANGES = {"uint8": [0, 255], "uint16": [0, 65535]}


def stored_range(paths: Sequence[Path]) -> list[int] | None:
    """``[0, 255]`` or ``[0, 65535]`` when every raster image has that integer type, else None."""
    from PIL import Image

    kinds = set()
    for path in paths:
        try:
            with Image.open(path) as image:
                kinds.add(str(np.asarray(image).dtype))
        except OSError:
            return None
    return TYPE_RANGES.get(kinds.pop()) if len(kinds) == 1 else None


def prepare(
    csv: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    image_column: str = "image",
    attributes: Sequence[str] = (),
    channels: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    teacher_size: float | int = 0.1,
    teacher_disjoint: bool = True,
    drop_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> Path:
    """Write a datalist for the images of ``image_root`` listed in ``csv``.

    Raises:
        ValueError: the CSV is missing or lacks the image or label column, labels are not 0/1,
            ids repeat, or images are missing (without ``drop_missing``; a few are named).
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    csv, image_root = Path(csv), Path(image_root)
    if not csv.is_file():
        raise ValueError(f"CSV {csv} not found")
    frame = pd.read_csv(csv)
    absent = [c for c in (image_column, "label", *attributes) if c not in frame.columns]
    if absent:
        raise ValueError(f"{csv} lacks column(s) {absent}; columns present: {list(frame.columns)}")
    images = [image_root / str(name) for name in frame[image_column]]
    table = pd.DataFrame({
        "image": images,
        "label": pd.to_numeric(frame["label"], errors="coerce").to_numpy(),
        "id": frame["id"].astype(str) if "id" in frame.columns else [Path(str(n)).stem for n in frame[image_column]],
        "bias": frame["bias"].astype(int) if "bias" in frame.columns else 0,
    })
    for column in attributes:
        table[column] = frame[column].to_numpy()
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    metadata = {
        "source": "table",
        "csv": str(csv.resolve()),
        "image_root": str(image_root.resolve()),
        "seed": seed,
        "spatial_dims": 2,
        "labels": {"0": "negative", "1": "positive"},
    }
    if channels is not None:
        metadata["channels"] = channels
    found = [p for p in images if p.is_file()]
    intensity = stored_range(found) if found else None
    if intensity is not None:
        metadata["stored_intensity_range"] = intensity
    return build_datalist(
        table, out_dir, spec, metadata, attributes=("bias", *attributes), drop_missing=drop_missing,
        overwrite=overwrite, progress=progress, verbose=verbose,
    )
