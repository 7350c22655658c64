"""Write a MONAI datalist JSON and its per-role/per-class summary CSV, atomically."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from data_prep.splits import ROLE_ORDER

DATALIST_NAME = "datalist.json"
SUMMARY_NAME = "datalist_summary.csv"
MAX_LISTED = 10


def check_unique_ids(ids: Iterable[str], what: str = "samples") -> None:
    """Raise if any sample id occurs more than once.

    Raises:
        ValueError: lists the first repeated ids and how many there are.
    """
    counts = Counter(ids)
    repeated = [i for i, c in counts.items() if c > 1]
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:MAX_LISTED])
        raise ValueError(f"{len(repeated)} duplicate id(s) among the {what} (ids must be unique): {shown}")


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise unless none of ``paths`` exists or ``overwrite`` is set.

    Raises:
        FileExistsError: names the existing outputs and the option that allows replacing them.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output already exists: {', '.join(existing)}; pass --overwrite (overwrite=True) to replace it"
        )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summarize(roles: Mapping[str, list[dict]]) -> pd.DataFrame:
    """Counts per role and class: columns ``role``, ``label``, ``count`` plus one ``all`` row per role."""
    rows = []
    for role in _ordered(roles):
        labels = Counter(int(item["label"]) for item in roles[role])
        for label in sorted(labels):
            rows.append({"role": role, "label": str(label), "count": labels[label]})
        rows.append({"role": role, "label": "all", "count": len(roles[role])})
    return pd.DataFrame(rows, columns=["role", "label", "count"])


def _ordered(roles: Mapping[str, list]) -> list[str]:
    return [r for r in ROLE_ORDER if r in roles] + sorted(r for r in roles if r not in ROLE_ORDER)


def write_datalist(
    out_dir: str | Path,
    roles: Mapping[str, list[dict]],
    metadata: Mapping,
    overwrite: bool = False,
    verbose: bool = True,
) -> Path:
    """Write ``out_dir/datalist.json`` (one list per role + ``metadata``) and the summary CSV.

    Image paths must already be relative to ``out_dir`` (MONAI's ``load_decathlon_datalist``
    resolves them against the datalist's folder).

    Args:
        out_dir: destination folder (created if needed).
        roles: role name -> items (dicts with ``image``, ``label``, ``id`` ...).
        metadata: recorded as the top-level ``"metadata"`` dict.
        overwrite: replace an existing datalist/summary.
        verbose: print the summary table.

    Returns:
        path of the datalist JSON.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
        ValueError: a role is named ``metadata``, or ids repeat inside a role.
    """
    out_dir = Path(out_dir)
    datalist_path, summary_path = out_dir / DATALIST_NAME, out_dir / SUMMARY_NAME
    refuse_existing([datalist_path, summary_path], overwrite)
    if "metadata" in roles:
        raise ValueError("a role may not be named 'metadata' (reserved for the datalist's metadata dict)")
    for role, items in roles.items():
        check_unique_ids((str(item["id"]) for item in items), what=f"'{role}' items")
    summary = summarize(roles)
    content = {role: list(roles[role]) for role in _ordered(roles)}
    content["metadata"] = {**metadata, "counts": {role: len(roles[role]) for role in _ordered(roles)}}
    write_text_atomic(summary_path, summary.to_csv(index=False))
    write_text_atomic(datalist_path, json.dumps(content, indent=1) + "\n")
    if verbose:
        print(f"datalist: {datalist_path}")
        print(format_summary(summary))
    return datalist_path


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a role x label table of counts."""
    table = summary.pivot(index="role", columns="label", values="count").fillna(0).astype(int)
    return table.reindex([r for r in dict.fromkeys(summary["role"])]).to_string()
