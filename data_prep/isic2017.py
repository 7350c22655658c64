"""Read ISIC 2017's layout (Part 3 ground truth + image folders) into a datalist.

Expected under ``root`` (as unpacked from the challenge archives)::

    ISIC-2017_Training_Data/ISIC_0000000.jpg ...     (or .png; + optional ..._Data_metadata.csv)
    ISIC-2017_Training_Part3_GroundTruth.csv         image_id, melanoma, seborrheic_keratosis
    ISIC-2017_Validation_Data/, ISIC-2017_Validation_Part3_GroundTruth.csv      (optional)
    ISIC-2017_Test_v2_Data/, ISIC-2017_Test_v2_Part3_GroundTruth.csv            (optional)

An image folder unzipped twice (``ISIC-2017_Training_Data/ISIC-2017_Training_Data/*.jpg``, as
unzipping the archive into a folder of its own name gives) is found as well.

The official validation and test parts, when present, become the ``validation`` and ``test``
roles; otherwise those roles are split from the training part.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.datalist_build import build_datalist
from data_prep.splits import SplitSpec

TASKS = ("melanoma", "seborrheic_keratosis")
# Official part name(s) -> role; the first name found is used (the test set was re-issued as v2).
PARTS = {"Training": ("Training",), "Validation": ("Validation",), "Test": ("Test_v2", "Test")}
ROLE_OF_PART = {"Training": None, "Validation": "validation", "Test": "test"}
# image files per id: the challenge's JPEGs, or PNGs of the same name (converted, or your own)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".PNG")


def find_part(root: Path, part: str) -> tuple[Path, Path] | None:
    """(image folder, ground-truth CSV) of an official part under ``root``, or None if absent.

    Raises:
        ValueError: only one of the folder and the CSV exists.
    """
    for name in PARTS[part]:
        folder = root / f"ISIC-2017_{name}_Data"
        if (folder / folder.name).is_dir() and not any(p.suffix in IMAGE_SUFFIXES for p in folder.iterdir()):  # unzipped twice
            folder = folder / folder.name
        truth = root / f"ISIC-2017_{name}_Part3_GroundTruth.csv"
        if folder.is_dir() and truth.is_file():
            return folder, truth
        if folder.is_dir() or truth.is_file():
            present, absent = (folder, truth) if folder.is_dir() else (truth, folder)
            raise ValueError(f"ISIC 2017 {part} part is incomplete: found {present} but not {absent}")
    return None


def image_file(folder: Path, image_id: str) -> Path:
    """``folder/<image_id>`` with the first of :data:`IMAGE_SUFFIXES` that exists (``.jpg`` when
    none does: then reported missing with the others)."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{image_id}{suffix}").is_file():
            return folder / f"{image_id}{suffix}"
    return folder / f"{image_id}{IMAGE_SUFFIXES[0]}"


def read_part(folder: Path, truth: Path, task: str, role: str | None) -> pd.DataFrame:
    """One official part as a sample table (image, label, id, sex, age, role).

    Raises:
        ValueError: the ground truth lacks a column or holds values other than 0/1.
    """
    frame = pd.read_csv(truth)
    absent = [c for c in ("image_id", task) if c not in frame.columns]
    if absent:
        raise ValueError(f"{truth} lacks column(s) {absent}; columns present: {list(frame.columns)}")
    values = pd.to_numeric(frame[task], errors="coerce")
    bad = sorted({repr(v) for v in frame[task][~values.isin([0, 1])]})
    if bad:
        raise ValueError(f"{truth} column {task!r} must hold 0 or 1, found {bad[:10]}")
    table = pd.DataFrame({
        "image": [image_file(folder, str(image_id)) for image_id in frame["image_id"]],
        "label": values.astype(int).to_numpy(),
        "id": frame["image_id"].astype(str).to_numpy(),
        "role": role,
    })
    metadata_csv = next(
        (p for p in (d / f"{folder.name}_metadata.csv" for d in (folder, *folder.parents[:2])) if p.is_file()), None
    )
    if metadata_csv is not None:
        extra = pd.read_csv(metadata_csv).drop_duplicates("image_id").set_index("image_id")
        age = extra.get("age_approximate", pd.Series(dtype=object))
        sex = extra.get("sex", pd.Series(dtype=object))
        table["age"] = pd.to_numeric(age.reindex(table["id"]), errors="coerce").round().astype("Int64").array
        table["sex"] = sex.reindex(table["id"]).fillna("unknown").astype(str).to_numpy()
    else:
        table["age"], table["sex"] = pd.array([pd.NA] * len(table), dtype="Int64"), "unknown"
    return table


def prepare(
    root: str | Path,
    out_dir: str | Path,
    task: str = "melanoma",
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
    """Write a datalist for an ISIC 2017 binary task (``melanoma`` vs rest by default).

    Args:
        root: folder with the ISIC 2017 parts (only read).
        out_dir: folder for ``datalist.json`` and ``datalist_summary.csv``.
        task: ``melanoma`` or ``seborrheic_keratosis`` (that class vs the rest).
        seed, val_fraction, test_fraction, teacher_size, teacher_disjoint: see
            :class:`SplitSpec`; a fraction is ignored when the official part exists.
        drop_missing: leave out rows whose image is missing or unreadable.
        overwrite: replace an existing datalist.
        progress, verbose: progress bars and printed summary.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: bad task, no training part, incomplete part, bad labels, missing images
            (without ``drop_missing``) or duplicate ids.
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    root = Path(root)
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    found = {part: find_part(root, part) for part in PARTS}
    if found["Training"] is None:
        raise ValueError(
            f"no ISIC 2017 training part under {root}: expected ISIC-2017_Training_Data/ and "
            "ISIC-2017_Training_Part3_GroundTruth.csv"
        )
    if found["Validation"] is not None:
        val_fraction = 0.0
    if found["Test"] is not None:
        test_fraction = 0.0
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    table = pd.concat(
        [read_part(*paths, task, ROLE_OF_PART[part]) for part, paths in found.items() if paths is not None],
        ignore_index=True,
    )
    metadata = {
        "source": "isic2017",
        "root": str(root.resolve()),
        "parameters": {"task": task, "official_parts": [p for p, paths in found.items() if paths is not None]},
        "seed": seed,
        "image_size": None,
        "spatial_dims": 2,
        "channels": 3,
        "labels": {"0": f"not {task}", "1": task},
    }
    return build_datalist(
        table, out_dir, spec, metadata, attributes=("sex", "age"),
        drop_missing=drop_missing, overwrite=overwrite, progress=progress, verbose=verbose,
    )
