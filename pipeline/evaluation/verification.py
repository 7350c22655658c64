"""Check a report after the fact: recompute every number from the prediction files it lists and
name every number of ``results.csv``, ``results.md`` and ``headline.md`` that differs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluation import protocol
from pipeline.evaluation.figures import NOT_AVAILABLE
from pipeline.evaluation.headline import HEADLINE_MD, check_headline
from pipeline.evaluation.report import (
    AUC_CELL,
    DETAIL_TABLE,
    NO_RUN,
    RESULT_COLUMNS,
    RESULTS_MD,
    SETTING_COLUMNS,
    load_results,
)


def recompute_results(out_dir: str | Path) -> pd.DataFrame:
    """Recompute every number of ``out_dir/results.csv`` from the prediction files it lists.

    Returns:
        A table with the same rows and columns as results.csv.

    Raises:
        FileNotFoundError: results.csv or a prediction file is missing.
        ValueError: a prediction file is invalid.
    """
    out_dir = Path(out_dir)
    stored = load_results(out_dir)
    parts = []
    for _, group in stored.groupby(list(SETTING_COLUMNS), sort=False, dropna=False):
        settings = group.iloc[0][list(SETTING_COLUMNS)].to_dict()
        recomputed = protocol.results_table(group[list(protocol.RUN_COLUMNS)], out_dir, **settings)
        parts.append(recomputed.set_axis(group.index))
    return pd.concat(parts).loc[stored.index, list(RESULT_COLUMNS)]


def _parse_numbers(cell: str) -> list[float]:
    tokens = re.findall(r"n/a|[-+]?\d+(?:\.\d+)?", cell)
    return [float("nan") if token == NOT_AVAILABLE else float(token) for token in tokens]


def _shown_equal(shown: float, value: float, decimals: int) -> bool:
    if np.isnan(shown) or pd.isna(value):
        return bool(np.isnan(shown) and pd.isna(value))
    return abs(shown - float(value)) <= 0.5 * 10.0**-decimals + 1e-9


def _markdown_tables(text: str):
    """Yield (scenario, header cells, row cells, line number) for every table row of results.md."""
    scenario, header = None, None
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.fullmatch(r"## Scenario `(.+)`", line.strip())
        if match:
            scenario, header = match.group(1), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= {"-"} for cell in cells):
            yield scenario, header, cells, number


def _check_cell(where: str, cell: str, row: Mapping, columns: Sequence[str]) -> list[str]:
    shown = _parse_numbers(cell)
    decimals = 0 if columns == ("n",) else 3
    expected = [row[c] for c in columns]
    if len(shown) != len(expected) or not all(_shown_equal(s, e, decimals) for s, e in zip(shown, expected)):
        return [f"{where}: results.md shows {cell!r}, recomputed {dict(zip(columns, expected))}"]
    return []


def verify_report(out_dir: str | Path) -> list[str]:
    """Recompute a report folder and list every number of results.csv / results.md / headline.md that differs.

    results.csv numbers must match to floating-point precision; results.md and headline.md (when
    the folder has one) numbers to their printed decimals. Every results.csv row must appear in
    the "All metrics" tables, every method in the headline table.

    Returns:
        Human-readable mismatches; empty when the report is consistent.

    Raises:
        FileNotFoundError: results.csv, results.md or a prediction file is missing.
        ValueError: a prediction file is invalid.
    """
    out_dir = Path(out_dir)
    stored, recomputed = load_results(out_dir), recompute_results(out_dir)
    mismatches = []
    for index, row in recomputed.iterrows():
        where = f"results.csv row {index + 2} ({row['scenario']}/{row['method']}/{row['test_set']})"
        for column in protocol.NUMBER_COLUMNS:
            have, want = stored.at[index, column], row[column]
            same = (pd.isna(have) and pd.isna(want)) or (
                not pd.isna(have) and not pd.isna(want) and np.isclose(float(have), float(want), rtol=1e-9, atol=1e-12)
            )
            if not same:
                mismatches.append(f"{where} column {column!r}: file has {have!r}, recomputed {want!r}")
    md_path = out_dir / RESULTS_MD
    if not md_path.is_file():
        raise FileNotFoundError(f"report file {str(md_path)!r} does not exist")
    lookup = {(r["scenario"], r["method"], r["test_set"]): r for _, r in recomputed.iterrows()}
    shown_rows = set()
    detail_header = ["method", "test set", *(header for header, _ in DETAIL_TABLE)]
    for scenario, header, cells, line in _markdown_tables(md_path.read_text(encoding="utf-8")):
        if len(cells) != len(header):
            mismatches.append(f"results.md line {line}: {len(cells)} cells under a {len(header)}-column header")
            continue
        if header == detail_header:
            key = (scenario, cells[0], cells[1])
            if key not in lookup:
                mismatches.append(f"results.md line {line}: row {key} is not in results.csv")
                continue
            shown_rows.add(key)
            for (title, columns), cell in zip(DETAIL_TABLE, cells[2:]):
                mismatches += _check_cell(f"results.md line {line} {key} {title!r}", cell, lookup[key], columns)
        elif header[0] == "method":
            for test_set, cell in zip(header[1:], cells[1:]):
                key = (scenario, cells[0], test_set)
                if key not in lookup:
                    if cell != NO_RUN:
                        mismatches.append(f"results.md line {line}: {key} shows {cell!r} but is not in results.csv")
                    continue
                mismatches += _check_cell(f"results.md line {line} {key} AUC", cell, lookup[key], AUC_CELL)
        else:
            mismatches.append(f"results.md line {line}: table with unknown header {header}")
    for key in lookup:
        if key not in shown_rows:
            mismatches.append(f"results.md: no 'All metrics' row for {key}")
    headline = out_dir / HEADLINE_MD
    if headline.is_file():
        mismatches += check_headline(headline.read_text(encoding="utf-8"), recomputed)
    return mismatches
