"""Read a SimBA-generated dataset (CSVs with ``filepath``/``filename``, ``class_label``, ``bias_label``) into a datalist.

SimBA bakes its bias effect into the volumes, so the bias is kept as a known group attribute
(``bias``: 1 = the volume carries a bias effect), splits are stratified over class x bias (as
SimBA does), and the specialist teacher is drawn from bias-free volumes by default. SimBA's CSVs
are written as::

    ,isv_dst,effect_dst,isv_bin,effect_bin,both_bins,bias_label,class_label,strat_col,filepath,filename

where ``filepath`` is an absolute path on the machine that generated the data; pass
``image_root`` (the folder now holding the volumes) and the volumes are found by ``filename``.
Single-bias CSVs code ``bias_label`` as 0 (no bias) / 1 (bias); multi-bias CSVs as 0-3 with
3 = "no bias" (0 both effects, 1 intensity, 2 shape); the original code is kept as ``bias_label``
and its name as ``bias_type``, so results can be split per bias type.

SimBA as its own code publishes a dataset (``generate_data.py``)::

    <root>/datasets/<experiment>/{train,val,test}/00000_<effects>.nii.gz ...   (numbering restarts per split)
    <root>/<experiment>/{train,val,test}.csv

is read by :func:`prepare_published` (``python -m data_prep simba --simba-root ROOT --experiment EXP``):
each split's volumes are found in their own folder, ids are prefixed with the split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.datalist_build import build_datalist
from data_prep.splits import SplitSpec

REQUIRED = ("class_label", "bias_label")
#: SimBA's split names (generate_data.py --split) -> datalist role (None: split by the fractions)
PUBLISHED_SPLITS = {"train": None, "val": "validation", "test": "test"}
#: bias_label -> bias type, single-bias (0/1) and multi-bias (0-3) coding
BIAS_TYPES_SINGLE = {0: "none", 1: "bias"}
BIAS_TYPES_MULTI = {0: "both", 1: "intensity", 2: "shape", 3: "none"}
#: "no bias" code of ``bias_label`` in SimBA's single-bias (0/1) and multi-bias (0-3) CSVs
NO_BIAS_SINGLE, NO_BIAS_MULTI = 0, 3
MULTI_BIAS_CODES = (0, 1, 2, 3)


def _strip_suffixes(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _integer_codes(frame: pd.DataFrame, column: str, allowed, csv_path: Path, meaning: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = sorted({repr(v) for v in frame[column][~values.isin(list(allowed))]})
    if bad:
        raise ValueError(f"{csv_path} column {column!r} must hold {meaning}, found {bad[:10]}")
    return values.astype(int)


def read_csv(csv_path: str | Path, role: str | None = None, image_root: str | Path | None = None) -> pd.DataFrame:
    """A SimBA CSV as a sample table (image, label, id, bias_label, role); ``bias_label`` as stored.

    Without ``image_root``, ``filepath`` is the image (relative values resolved against the CSV's
    folder); with it, the image is ``image_root / filename``. Ids are the file names without suffix.

    Raises:
        ValueError: the CSV is missing, lacks a column, labels are not 0/1, or ``bias_label`` is
            not one of SimBA's codes 0-3.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"SimBA CSV {csv_path} not found")
    frame = pd.read_csv(csv_path)
    needed = [*REQUIRED, "filepath" if image_root is None else "filename"]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise ValueError(f"{csv_path} lacks column(s) {absent}; columns present: {list(frame.columns)}")
    labels = _integer_codes(frame, "class_label", (0, 1), csv_path, "0 or 1")
    codes = _integer_codes(
        frame, "bias_label", MULTI_BIAS_CODES, csv_path,
        "SimBA's bias codes (0/1 for one bias; 0-3 for several, 3 = no bias)",
    )  # fmt: skip
    if image_root is None:
        paths = [Path(p) if Path(p).is_absolute() else csv_path.parent / p for p in frame["filepath"].astype(str)]
    else:
        paths = [Path(image_root) / name for name in frame["filename"].astype(str)]
    names = frame["filename"].astype(str) if "filename" in frame.columns else [p.name for p in paths]
    return pd.DataFrame({
        "image": paths,
        "label": labels.to_numpy(),
        "id": [_strip_suffixes(n) for n in names],
        "bias_label": codes.to_numpy(),
        "role": role,
    })


def no_bias_code(codes: pd.Series, no_bias_label: int | None = None) -> int:
    """The ``bias_label`` code meaning "no bias effect" for the CSVs read together.

    Args:
        codes: ``bias_label`` of every CSV of the dataset.
        no_bias_label: the code given by the user; None: 0 when every code is 0 or 1 (a
            single-bias CSV), 3 when 2 or 3 occur (SimBA's multi-bias coding).

    Raises:
        ValueError: ``no_bias_label`` is not one of SimBA's codes 0-3.
    """
    if no_bias_label is None:
        return NO_BIAS_MULTI if codes.isin([2, 3]).any() else NO_BIAS_SINGLE
    if no_bias_label not in MULTI_BIAS_CODES or isinstance(no_bias_label, bool):
        raise ValueError(f"no_bias_label must be one of SimBA's bias codes {list(MULTI_BIAS_CODES)}, got {no_bias_label!r}")
    return int(no_bias_label)


def _check_found(table: pd.DataFrame, image_root) -> None:
    """Refuse CSVs none of whose volumes exist (SimBA's absolute paths of another machine)."""
    if len(table) and not any(Path(p).is_file() for p in table["image"]):
        hint = (
            f"is --image-root {image_root} the folder holding SimBA's volumes?" if image_root is not None else
            "SimBA's CSVs hold absolute paths of the machine that generated them: pass --image-root FOLDER "
            "(image_root=...) to find the volumes by their `filename` there"
        )  # fmt: skip
        raise ValueError(f"none of the {len(table)} volumes listed exists (e.g. {table['image'].iloc[0]}); {hint}")


def published_splits(root: str | Path, experiment: str) -> list[tuple[str, Path, Path]]:
    """``(split, csv, volume folder)`` of each split of SimBA's published layout under ``root``.

    Raises:
        ValueError: no ``train.csv``, or a split CSV without its volume folder (both paths named).
    """
    root = Path(root)
    found = []
    for split in PUBLISHED_SPLITS:
        csv, folder = root / experiment / f"{split}.csv", root / "datasets" / experiment / split
        if not csv.is_file():
            if split == "train":
                raise ValueError(f"SimBA layout: {csv} not found (expected <root>/<experiment>/train.csv)")
            continue
        if not folder.is_dir():
            raise ValueError(f"SimBA layout: {csv} has no volume folder {folder} (<root>/datasets/<experiment>/{split}/)")
        found.append((split, csv, folder))
    return found


def prepare_published(root: str | Path, experiment: str, out_dir: str | Path, **options) -> Path:
    """Write a datalist for a SimBA dataset in the layout SimBA's code writes (module docstring).

    ``options``: as for :func:`prepare` (``val_csv``, ``test_csv`` and ``image_root`` come from the
    layout). The ``val``/``test`` splits, when present, are the ``validation``/``test`` roles.
    """
    tables = []
    for split, csv, folder in published_splits(root, experiment):
        table = read_csv(csv, role=PUBLISHED_SPLITS[split], image_root=folder)
        table["id"] = [f"{split}_{i}" for i in table["id"]]
        tables.append(table)
    if any(PUBLISHED_SPLITS[split] == "validation" for split, *_ in published_splits(root, experiment)):
        options["val_fraction"] = 0.0
    if any(PUBLISHED_SPLITS[split] == "test" for split, *_ in published_splits(root, experiment)):
        options["test_fraction"] = 0.0
    source = {"root": str(Path(root).resolve()), "experiment": experiment}
    return _write(tables, out_dir, source=source, **options)


def prepare(
    csv: str | Path,
    out_dir: str | Path,
    val_csv: str | Path | None = None,
    test_csv: str | Path | None = None,
    image_root: str | Path | None = None,
    no_bias_label: int | None = None,
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
        image_root: folder holding the volumes, found there by ``filename`` (SimBA's ``filepath``
            is an absolute path of the machine that generated them); None: use ``filepath``.
        no_bias_label: the "no bias" code of ``bias_label``; None: 0 for single-bias CSVs (codes
            0/1), 3 for multi-bias ones (codes 0-3), see :func:`no_bias_code`.
        teacher_bias_free: draw the teacher only from bias-free volumes.
        seed, val_fraction, test_fraction, teacher_size, teacher_disjoint: see :class:`SplitSpec`.
        drop_missing: leave out rows whose volume is missing or unreadable.
        overwrite: replace an existing datalist.
        progress, verbose: progress bars and printed summary.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: missing CSV/column, bad labels or bias codes, no volume found, missing volumes
            (without ``drop_missing``), duplicate ids, or too few bias-free volumes for the teacher.
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    tables = [read_csv(csv, image_root=image_root)]
    if val_csv is not None:
        tables.append(read_csv(val_csv, role="validation", image_root=image_root))
        val_fraction = 0.0
    if test_csv is not None:
        tables.append(read_csv(test_csv, role="test", image_root=image_root))
        test_fraction = 0.0
    source = {
        "csv": [str(Path(p).resolve()) for p in (csv, val_csv, test_csv) if p is not None],
        "image_root": None if image_root is None else str(Path(image_root).resolve()),
    }
    return _write(
        tables, out_dir, source=source, image_root=image_root, no_bias_label=no_bias_label,
        teacher_bias_free=teacher_bias_free, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        teacher_size=teacher_size, teacher_disjoint=teacher_disjoint, drop_missing=drop_missing,
        overwrite=overwrite, progress=progress, verbose=verbose,
    )  # fmt: skip


def _write(
    tables: list[pd.DataFrame],
    out_dir: str | Path,
    source: dict,
    image_root: str | Path | None = None,
    no_bias_label: int | None = None,
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
    """The datalist of the SimBA sample tables read (see :func:`prepare`)."""
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    table = pd.concat(tables, ignore_index=True)
    _check_found(table, image_root)
    no_bias_label = no_bias_code(table["bias_label"], no_bias_label)
    table["bias"] = (table["bias_label"] != no_bias_label).astype(int)
    names = BIAS_TYPES_MULTI if no_bias_label == NO_BIAS_MULTI else BIAS_TYPES_SINGLE
    table["bias_type"] = [names.get(code, str(code)) if code != no_bias_label else "none" for code in table["bias_label"]]
    table["bias_free"] = table["bias"] == 0 if teacher_bias_free else True
    metadata = {
        "source": "simba",
        **source,
        "parameters": {"teacher_bias_free": teacher_bias_free, "no_bias_label": no_bias_label},
        "prebiased": True,
        "seed": seed,
        "image_size": None,
        "spatial_dims": 3,
        "channels": 1,
        "modality": "MR",
        "labels": {"0": "healthy", "1": "disease"},
        "bias_types": {str(k): v for k, v in names.items()},
    }
    return build_datalist(
        table, out_dir, spec, metadata, attributes=("bias", "bias_label", "bias_type"), strata=("label", "bias"),
        teacher_eligible="bias_free", drop_missing=drop_missing, overwrite=overwrite,
        progress=progress, verbose=verbose,
    )
