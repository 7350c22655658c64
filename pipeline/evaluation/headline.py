"""The headline table of an experiment (the README's results table), from results.csv.

One row per method: AUC on the bias-free, bias-inverted, in-distribution and OOD test sets, ΔTPR
on the in-distribution test and on the counterfactual pairs (TPR of every test positive with the
artifact minus without), worst-group accuracy on the bias-inverted test and the flip rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import pandas as pd

from pipeline.atomic import atomic_path

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
)


def headline_rows(results: pd.DataFrame, scenario: str) -> dict[str, dict[str, float]]:
    """method -> {column: value} for one scenario of a results table (NaN where a set is absent)."""
    part = results[results["scenario"] == scenario]

    def value(method: str, test_set: str, column: str) -> float:
        row = part[(part["method"] == method) & (part["test_set"] == test_set)]
        return float(row[column].iloc[0]) if len(row) and not pd.isna(row[column].iloc[0]) else math.nan

    rows = {}
    for method in dict.fromkeys(part["method"]):
        rows[method] = {
            "bias-free AUC": value(method, "bias_free", "auc"),
            "bias-inverted AUC": value(method, "bias_inverted", "auc"),
            "in-distribution AUC": value(method, "in_distribution", "auc"),
            "OOD AUC": value(method, "ood", "auc"),
            "ΔTPR": value(method, "in_distribution", "delta_tpr"),
            "ΔTPR (counterfactual)": value(method, "cf_with", "tpr_bias1")
            - value(method, "cf_without", "tpr_bias0"),
            "worst-group acc. (inverted)": value(method, "bias_inverted", "worst_group_accuracy"),
            "flip rate": value(method, "cf_with", "flip_rate"),
        }
    return rows


def headline_markdown(results: pd.DataFrame, needs: Mapping[str, str] | None = None) -> str:
    """The headline table of every scenario, as markdown (``needs``: method -> what it needs)."""
    lines = []
    for scenario in dict.fromkeys(results["scenario"]):
        lines += [f"### {scenario}", "", "| method | needs | " + " | ".join(COLUMNS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]  # fmt: skip
        for method, row in headline_rows(results, scenario).items():
            cells = [
                "n/a" if math.isnan(v) else (f"{v:.3f}" if "AUC" in c else f"{v:.2f}") for c, v in row.items()
            ]
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
