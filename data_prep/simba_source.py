"""Read a SimBA-generated dataset (CSV with ``filepath``, ``class_label``, ``bias_label``) into a datalist.

SimBA bakes its bias effect into the volumes, so ``bias_label`` is kept as a known group
attribute (``bias``), splits are stratified over class x bias (as SimBA does), and the
specialist teacher is drawn from bias-free volumes by default (the clean subset).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.datalist_build import build_datalist
from data_prep.splits import SplitSpec

REQUIRED = ("filepath", "class_label", "bias_label")


def _strip_suffixes(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_csv(csv_path: str | Path, role: str | None = None) -> pd.DataFrame:
    """A SimBA CSV as a sample table (image, label, id, bias, role).

    Relative ``filepath`` values are resolved against the CSV's folder; ids are the file names
    without suffix (SimBA's ``filename`` column when present).

    Raises:
        ValueError: the CSV is missing, lacks a column, or labels are not 0/1.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"SimBA CSV {csv_path} not found")
    frame = pd.read_csv(csv_path)
    absent = [c for c in REQUIRED if c not in frame.columns]
    if absent:
        raise ValueError(f"{csv_path} lacks column(s) {absent}; columns present: {list(frame.columns)}")
    for column in ("class_label", "bias_label"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = sorted({repr(v) for v in frame[column][~values.isin([0, 1])]})
        if bad:
            raise ValueError(f"{csv_path} column {column!r} must hold 0 or 1, found {bad[:10]}")
    paths = [Path(p) if Path(p).is_absolute() else csv_path.parent / p for p in frame["filepath"].astype(str)]
    names = frame["filename"].astype(str) if "filename" in frame.columns else [p.name for p in paths]
    return pd.DataFrame({
        "image": paths,
        "label": pd.to_numeric(frame["class_label"]).astype(int).to_numpy(),
        "id": [_strip_suffixes(n) for n in names],
        "bias": pd.to_numeric(frame["bias_label"]).astype(int).to_numpy(),
        "role": role,
    })


def prepare(
    csv: str | Path,
    out_dir: str | Path,
    val_csv: str | Path | None = None,
    test_csv: str | Path | None = None,
    teacher_bias_free: bool = True,
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
    """Write a datalist for a SimBA dataset.

    Args:
        csv: the SimBA CSV to split (or the training CSV when ``val_csv``/``test_csv`` are given).
        out_dir: folder for ``datalist.json`` and ``datalist_summary.csv``.
        val_csv, test_csv: SimBA's own validation/test CSVs; when given, they become those roles
            and the matching fraction is ignored.
        teacher_bias_free: draw the teacher only from ``bias_label == 0`` volumes.
        seed, val_fraction, test_fraction, teacher_size, teacher_disjoint: see :class:`SplitSpec`.
        drop_missing: leave out rows whose volume is missing or unreadable.
        overwrite: replace an existing datalist.
        progress, verbose: progress bars and printed summary.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: missing CSV/column, bad labels, missing volumes (without ``drop_missing``),
            duplicate ids, or too few bias-free volumes for the teacher.
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    tables = [read_csv(csv)]
    if val_csv is not None:
        tables.append(read_csv(val_csv, role="validation"))
        val_fraction = 0.0
    if test_csv is not None:
        tables.append(read_csv(test_csv, role="test"))
        test_fraction = 0.0
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    table = pd.concat(tables, ignore_index=True)
    table["bias_free"] = table["bias"] == 0 if teacher_bias_free else True
    metadata = {
        "source": "simba",
        "csv": [str(Path(p).resolve()) for p in (csv, val_csv, test_csv) if p is not None],
        "parameters": {"teacher_bias_free": teacher_bias_free},
        "seed": seed,
        "image_size": None,
        "spatial_dims": 3,
        "channels": 1,
        "labels": {"0": "healthy", "1": "disease"},
    }
    return build_datalist(
        table, out_dir, spec, metadata, attributes=("bias",), strata=("label", "bias"),
        teacher_eligible="bias_free", drop_missing=drop_missing, overwrite=overwrite,
        progress=progress, verbose=verbose,
    )
