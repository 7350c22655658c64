"""Read CheXpert's own layout (train.csv / valid.csv) into a patient-level split datalist.

The CSVs hold ``Path`` (e.g. ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``,
relative to the dataset root's parent), ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and the
14 findings coded 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned, read as 0).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from data_prep.datalist_build import build_datalist
from data_prep.splits import SplitSpec

FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
VALID_ROLES = ("test", "validation", "pool")
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def image_path(root: Path, csv_path: str) -> Path:
    """Where a CSV ``Path`` lives: under ``root``, whatever the root folder is called."""
    parts = PurePosixPath(str(csv_path).replace("\\", "/")).parts
    if len(parts) > 1 and parts[0].lower().startswith("chexpert"):
        parts = parts[1:]
    return root.joinpath(*parts)


def patient_id(csv_path: str) -> str:
    """The ``patientNNNNN`` component of a CSV ``Path``.

    Raises:
        ValueError: no component starts with ``patient``.
    """
    for part in PurePosixPath(str(csv_path).replace("\\", "/")).parts:
        if part.startswith("patient"):
            return part
    raise ValueError(f"CheXpert Path {csv_path!r} has no 'patient...' component")


def finding_codes(column: pd.Series, csv_path: Path, finding: str) -> pd.Series:
    """The finding's codes as floats (blank -> 0).

    Raises:
        ValueError: names the CSV, the line of every value that is not 1, 0, -1 or blank (text
            such as ``yes`` included), and the values.
    """
    codes = pd.to_numeric(column, errors="coerce")
    blank = column.isna() | (column.astype(str).str.strip() == "")
    unknown = ~blank & ~codes.isin((-1.0, 0.0, 1.0))
    if unknown.any():
        # CSV line numbers: the header is line 1, the first data row line 2
        shown = ", ".join(f"line {int(i) + 2}: {v!r}" for i, v in column[unknown].items())
        raise ValueError(
            f"{csv_path} column {finding!r} has {int(unknown.sum())} unknown value(s) ({shown}); "
            "expected 1, 0, -1 or blank"
        )
    return codes.fillna(0.0)


def read_table(root: Path, csv_name: str, finding: str, uncertain: str, frontal_only: bool) -> pd.DataFrame:
    """Rows of one CheXpert CSV as a sample table (image, label, id, patient, sex, age, view, projection).

    Raises:
        ValueError: the CSV is missing, lacks a column, or the options are invalid.
    """
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise ValueError(f"CheXpert CSV {csv_path} not found (expected train.csv and valid.csv in --root)")
    frame = pd.read_csv(csv_path)
    absent = [c for c in (*REQUIRED, finding) if c not in frame.columns]
    if absent:
        raise ValueError(f"{csv_path} lacks column(s) {absent}; columns present: {list(frame.columns)}")
    if frontal_only:
        frame = frame[frame["Frontal/Lateral"] == "Frontal"]
    raw = finding_codes(frame[finding], csv_path, finding)
    if uncertain == "ignore":
        keep = raw != -1.0
        frame, raw = frame[keep], raw[keep]
    labels = raw.replace(-1.0, 1.0 if uncertain == "ones" else 0.0).astype(int)
    paths = frame["Path"].astype(str)
    return pd.DataFrame({
        "image": [image_path(root, p) for p in paths],
        "label": labels.to_numpy(),
        "id": [str(PurePosixPath(*PurePosixPath(p.replace("\\", "/")).parts[-3:]).with_suffix("")) for p in paths],
        "patient": [patient_id(p) for p in paths],
        "sex": frame["Sex"].fillna("Unknown").astype(str).to_numpy(),
        "age": pd.to_numeric(frame["Age"], errors="coerce").round().astype("Int64").to_numpy(),
        "view": frame["Frontal/Lateral"].fillna("Unknown").astype(str).to_numpy(),
        "projection": frame["AP/PA"].fillna("Unknown").astype(str).to_numpy(),
    })


def prepare(
    root: str | Path,
    out_dir: str | Path,
    finding: str = "Pleural Effusion",
    uncertain: str = "zeros",
    frontal_only: bool = False,
    valid_role: str = "test",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    teacher_size: float | int = 0.1,
    teacher_disjoint: bool = True,
    drop_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> Path:
    """Write a datalist for one CheXpert finding with patient-level splits.

    Args:
        root: the dataset folder holding ``train.csv``, ``valid.csv``, ``train/`` and ``valid/``
            (e.g. ``.../CheXpert-v1.0-small``); it is only read.
        out_dir: folder for ``datalist.json`` and ``datalist_summary.csv``.
        finding: label column, one of ``FINDINGS``.
        uncertain: uncertain (-1) labels become 0 (``zeros``), 1 (``ones``) or are dropped
            (``ignore``).
        frontal_only: keep frontal views only.
        valid_role: ``valid.csv`` becomes ``test`` (default), ``validation``, or joins the
            pool that is split (``pool``); the fraction of the role it fills is ignored.
        seed, val_fraction, test_fraction, teacher_size, teacher_disjoint: see
            :class:`SplitSpec`; fractions apply to the pool (train.csv), by patient. With
            ``valid_role="validation"`` pass ``test_fraction`` to split a test set off train.csv.
        drop_missing: leave out rows whose image is missing or unreadable.
        overwrite: replace an existing datalist.
        progress, verbose: progress bars and printed summary.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: bad option, missing CSV/column, missing images (without ``drop_missing``),
            duplicate ids or a patient in both CSVs.
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    root = Path(root)
    if finding not in FINDINGS:
        raise ValueError(f"finding must be one of {list(FINDINGS)}, got {finding!r}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    if valid_role not in VALID_ROLES:
        raise ValueError(f"valid_role must be one of {list(VALID_ROLES)}, got {valid_role!r}")
    if valid_role == "test":
        test_fraction = 0.0
    elif valid_role == "validation":
        val_fraction = 0.0
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    train = read_table(root, "train.csv", finding, uncertain, frontal_only)
    valid = read_table(root, "valid.csv", finding, uncertain, frontal_only)
    train["role"] = None
    valid["role"] = None if valid_role == "pool" else valid_role
    table = pd.concat([train, valid], ignore_index=True)
    metadata = {
        "source": "chexpert",
        "root": str(root.resolve()),
        "parameters": {"finding": finding, "uncertain": uncertain, "frontal_only": frontal_only,
                       "valid_role": valid_role},
        "seed": seed,
        "image_size": None,
        "spatial_dims": 2,
        "channels": 1,
        "labels": {"0": f"no {finding}", "1": finding},
    }
    return build_datalist(
        table, out_dir, spec, metadata, attributes=("sex", "age", "view", "projection"), group="patient",
        drop_missing=drop_missing, overwrite=overwrite, progress=progress, verbose=verbose,
    )
