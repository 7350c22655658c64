"""From a table of samples to a written datalist: check ids and files, split, write.

Every source (generated or read from disk) produces a pandas table with one row per sample and
calls :func:`build_datalist`, so checking, splitting and writing behave the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from data_prep.datalist_io import (
    DATALIST_NAME,
    SUMMARY_NAME,
    check_unique_ids,
    refuse_existing,
    write_datalist,
)
from data_prep.image_check import bad_images_message, find_bad_images
from data_prep.splits import ROLE_ORDER, SplitSpec, assign_roles

REQUIRED_COLUMNS = ("image", "label", "id")
MISSING_TEXT = "unknown"
MISSING_NUMBER = -1
MAX_SHOWN = 10


def _json_value(value):
    """Plain Python value for JSON, or None when missing."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


def _attribute_values(table: pd.DataFrame, column: str) -> list:
    """Column values for JSON; missing ones become ``"unknown"`` (text) or ``-1`` (numbers)."""
    values = [_json_value(v) for v in table[column]]
    numeric = all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    fill = MISSING_NUMBER if numeric else MISSING_TEXT
    return [fill if v is None else (v if numeric else str(v)) for v in values]


def _check_groups_within_roles(table: pd.DataFrame, group: str) -> None:
    roles_per_group = table.assign(_role=table["role"].fillna("pool")).groupby(group)["_role"].nunique()
    spanning = roles_per_group[roles_per_group > 1].index.tolist()
    if spanning:
        raise ValueError(
            f"{len(spanning)} {group}(s) appear both in a source-defined role and elsewhere "
            f"(e.g. {spanning[:5]}); a {group} must stay inside one role"
        )


def _check_unique_images(table: pd.DataFrame) -> None:
    """Raise if one image file belongs to several samples (they could land in two roles: leakage)."""
    files = pd.Series([os.path.normpath(os.path.abspath(p)) for p in table["image"]], index=table.index)
    shared = files[files.duplicated(keep=False)]
    if len(shared):
        groups = table.loc[shared.index, "id"].groupby(shared).apply(list)
        shown = "; ".join(f"{path} (ids {ids})" for path, ids in list(groups.items())[:MAX_SHOWN])
        raise ValueError(
            f"{len(groups)} image file(s) belong to more than one sample (each image must be one sample): {shown}"
        )


def build_datalist(
    table: pd.DataFrame,
    out_dir: str | Path,
    spec: SplitSpec,
    metadata: Mapping,
    attributes: Sequence[str] = (),
    group: str | None = None,
    strata: Sequence[str] = ("label",),
    teacher_eligible: str | None = None,
    drop_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> Path:
    """Check, split and write a datalist for ``table``.

    Args:
        table: one row per sample with ``image`` (path), ``label`` (0/1), ``id``; optionally
            ``role`` (a source-defined role such as ``test`` for CheXpert's valid.csv; empty
            means "split me"), the ``group`` column and the ``attributes`` columns.
        out_dir: folder for ``datalist.json`` and ``datalist_summary.csv``; image paths are
            written relative to it.
        spec: split fractions, teacher size and seed for the rows without a ``role``.
        metadata: recorded in the datalist (the split spec is added).
        attributes: extra columns copied into every item (e.g. ``sex``, ``age``, ``bias``).
        group: column kept whole inside one role (e.g. ``patient``); also copied to items.
        strata: columns kept in proportion in every role.
        teacher_eligible: boolean column; the teacher is drawn only from rows where it is True.
        drop_missing: drop samples whose image is missing, unreadable or not finite instead of failing.
        overwrite: replace an existing datalist.
        progress: show progress bars.
        verbose: print the summary.

    Returns:
        path of the written datalist.

    Raises:
        ValueError: a required column is missing, a label is not 0/1, ids or image files repeat, images are
            missing/unreadable/non-finite (without ``drop_missing``), a group spans roles, or the split
            does not fit.
        FileExistsError: the datalist exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    refuse_existing([out_dir / DATALIST_NAME, out_dir / SUMMARY_NAME], overwrite)
    needed = [*REQUIRED_COLUMNS, *attributes, *([group] if group else []), *strata]
    absent = [c for c in dict.fromkeys(needed) if c not in table.columns]
    if absent:
        raise ValueError(f"sample table lacks column(s) {absent}; it has {list(table.columns)}")
    table = table.reset_index(drop=True).copy()
    if "role" not in table.columns:
        table["role"] = None
    bad_roles = sorted(set(table["role"].dropna()) - set(ROLE_ORDER))
    if bad_roles:
        raise ValueError(f"unknown role(s) {bad_roles} in the sample table; allowed: {list(ROLE_ORDER)}")
    bad_labels = sorted({repr(v) for v in table["label"] if v not in (0, 1) or isinstance(v, bool)})
    if bad_labels:
        raise ValueError(f"labels must be 0 or 1, found {bad_labels[:10]}")
    table["label"] = table["label"].astype(int)
    table["id"] = table["id"].astype(str)
    check_unique_ids(table["id"], what="samples")
    _check_unique_images(table)

    paths = [str(p) for p in table["image"]]
    problems = find_bad_images(paths, progress=progress)
    if problems:
        message = bad_images_message(paths, problems, len(table))
        if not drop_missing:
            raise ValueError(f"{message}. Pass --drop-missing (drop_missing=True) to leave them out.")
        print(f"dropped {len(problems)} sample(s) with unusable images: {message}")
        table = table.drop(index=list(problems)).reset_index(drop=True)
    if group:
        _check_groups_within_roles(table, group)

    pool = table[table["role"].isna()]
    rows_by_role: dict[str, list[int]] = {}
    if len(pool):
        eligible = pool[teacher_eligible] if teacher_eligible else None
        split = assign_roles(pool, spec, strata=strata, group=group, teacher_eligible=eligible)
        rows_by_role = {role: [int(pool.index[i]) for i in rows] for role, rows in split.items()}
    for role, rows in table[table["role"].notna()].groupby("role").groups.items():
        rows_by_role.setdefault(role, []).extend(int(i) for i in rows)

    base = os.path.abspath(out_dir)
    columns = {
        "image": [Path(os.path.relpath(os.path.abspath(p), base)).as_posix() for p in table["image"]],
        "label": table["label"].tolist(),
        "id": table["id"].tolist(),
    }
    for column in ([group] if group else []) + list(attributes):
        columns[column] = _attribute_values(table, column)
    items = [dict(zip(columns, values)) for values in zip(*columns.values())]
    roles = {role: [items[i] for i in sorted(rows)] for role, rows in rows_by_role.items() if rows}
    full_metadata = {
        **metadata,
        "split": {
            "val_fraction": spec.val_fraction,
            "test_fraction": spec.test_fraction,
            "teacher_size": spec.teacher_size,
            "teacher_disjoint": spec.teacher_disjoint,
            "seed": spec.seed,
            "strata": list(strata),
            "group": group,
        },
    }
    return write_datalist(out_dir, roles, full_metadata, overwrite=overwrite, verbose=verbose)
