"""The headline table of an experiment (the README's results table), from results.csv.

One row per method: AUC on the bias-free, bias-inverted, in-distribution and OOD test sets, ΔTPR
on the in-distribution test and on the counterfactual pairs (TPR of every test positive with the
artifact minus without), worst-group accuracy on the bias-inverted test, the flip rate, the share of ERM's gap to the reference
closed (bias-inverted AUC) and the honest verdict on the shortcut
(:func:`pipeline.evaluation.protocol.shortcut_verdict`: a model whose counterfactual ΔTPR is below
-0.10 is "over-corrected", never a success, whatever gap it closes).
:func:`check_headline` compares a written ``headline.md`` with a (recomputed) results table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import pandas as pd

from pipeline.atomic import atomic_path
from pipeline.evaluation.protocol import counterfactual_delta_tpr, gap_closed, shortcut_verdict

HEADLINE_MD = "headline.md"
COLUMNS = (
    "bias-free AUC",
    "bias-inverted AUC",
    "in-distribution AUC",
    "OOD AUC",
    "ΔTPR",
    "ΔTPR (counterfactual)",
    "worst-group acc. (inverted)",
    "flip rate",
    "gap closed",
    "verdict",
)


def headline_rows(results: pd.DataFrame, scenario: str) -> dict[str, dict[str, float]]:
    """method -> {column: value} for one scenario of a results table (NaN where a set is absent)."""
    part = results[results["scenario"] == scenario]

    def value(method: str, test_set: str, column: str) -> float:
        row = part[(part["method"] == method) & (part["test_set"] == test_set)]
        return float(row[column].iloc[0]) if len(row) and not pd.isna(row[column].iloc[0]) else math.nan

    def counterfactual(method: str) -> float:
        pair = {t: {"tpr_bias1": value(method, t, "tpr_bias1"), "tpr_bias0": value(method, t, "tpr_bias0")}
                for t in ("cf_with", "cf_without")}  # fmt: skip
        return counterfactual_delta_tpr(pair)

    def gap(method: str) -> float:
        erm, reference = value("erm", "bias_inverted", "auc"), value("reference", "bias_inverted", "auc")
        closed = gap_closed(erm, reference, value(method, "bias_inverted", "auc"))
        return math.nan if closed is None else closed

    rows = {}
    for method in dict.fromkeys(part["method"]):
        cf, bias_free = counterfactual(method), value(method, "bias_free", "auc")
        rows[method] = {
            "bias-free AUC": value(method, "bias_free", "auc"),
            "bias-inverted AUC": value(method, "bias_inverted", "auc"),
            "in-distribution AUC": value(method, "in_distribution", "auc"),
            "OOD AUC": value(method, "ood", "auc"),
            "ΔTPR": value(method, "in_distribution", "delta_tpr"),
            "ΔTPR (counterfactual)": cf,
            "worst-group acc. (inverted)": value(method, "bias_inverted", "worst_group_accuracy"),
            "flip rate": value(method, "cf_with", "flip_rate"),
            "gap closed": gap(method),
            "verdict": shortcut_verdict(cf, bias_free, value("erm", "bias_free", "auc")),
        }
    return rows


def _cell_text(column: str, value: float | str) -> str:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if "AUC" in column else (f"{value:.0%}" if column == "gap closed" else f"{value:.2f}")


def headline_markdown(results: pd.DataFrame, needs: Mapping[str, str] | None = None) -> str:
    """The headline table of every scenario, as markdown (``needs``: method -> what it needs)."""
    lines = []
    for scenario in dict.fromkeys(results["scenario"]):
        lines += [f"### {scenario}", "", "| method | needs | " + " | ".join(COLUMNS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]  # fmt: skip
        for method, row in headline_rows(results, scenario).items():
            cells = [_cell_text(column, v) for column, v in row.items()]
            lines.append(f"| {method} | {(needs or {}).get(method, '')} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_headline(
    results: pd.DataFrame, out_dir: str | Path, needs: Mapping[str, str] | None = None
) -> Path:
    """Write ``headline.md`` into the report folder (atomically); returns its path."""
    path = Path(out_dir) / HEADLINE_MD
    with atomic_path(path) as tmp:
        tmp.write_text(headline_markdown(results, needs), encoding="utf-8")
    return path


def check_headline(text: str, results: pd.DataFrame) -> list[str]:
    """Every cell of a ``headline.md`` text that differs from the table ``results`` gives (as
    printed), and every method row missing or extra; empty when they agree."""
    expected = {scenario: headline_rows(results, scenario) for scenario in dict.fromkeys(results["scenario"])}
    mismatches, shown, scenario = [], set(), None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("### "):
            scenario = line[4:].strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("method", "---"):
            continue
        method, values = cells[0], cells[2:]
        rows = expected.get(scenario, {})
        if method not in rows or len(values) != len(COLUMNS):
            mismatches.append(f"{HEADLINE_MD} line {number}: row {line.strip()!r} is not a method of {scenario!r} in results.csv")
            continue
        shown.add((scenario, method))
        for column, cell in zip(COLUMNS, values):
            want = _cell_text(column, rows[method][column])
            if cell != want:
                mismatches.append(f"{HEADLINE_MD} line {number} ({scenario}/{method}) {column!r}: shows {cell!r}, recomputed {want!r}")
    for scenario, rows in expected.items():
        mismatches += [f"{HEADLINE_MD}: no row for ({scenario}, {m})" for m in rows if (scenario, m) not in shown]
    return mismatches
