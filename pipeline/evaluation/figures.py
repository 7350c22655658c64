"""The report's figures: ROC curves per test set, TPR per bias group, and the shared PNG writer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.atomic import atomic_path
from pipeline.evaluation.metrics import roc_curve
from pipeline.evaluation.protocol import REPORT_TEST_SETS

FIGURE_DIR = "figures"
NOT_AVAILABLE = "n/a"


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG under a temporary name, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)



def ordered(values: Sequence[str], known: Sequence[str] = ()) -> list[str]:
    """Distinct ``values`` in first-seen order, those in ``known`` first in its order."""
    seen = list(dict.fromkeys(values))
    return [v for v in known if v in seen] + [v for v in seen if v not in known]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unnamed"


def check_slugs(names: Sequence[str], what: str) -> None:
    slugs: dict[str, str] = {}
    for name in names:
        other = slugs.setdefault(_slug(name), name)
        if other != name:
            raise ValueError(f"runs: {what} names {other!r} and {name!r} give the same figure file name {_slug(name)!r}")


def _roc_figure(part: pd.DataFrame, frames: Mapping[str, pd.DataFrame], title: str) -> Figure:
    fig = Figure(figsize=(4.5, 4.2), layout="constrained")
    axis = fig.subplots()
    axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    for _, row in part.iterrows():
        frame = frames[row["predictions"]]
        if frame["label"].nunique() < 2:
            continue
        fpr, tpr = roc_curve(frame["label"], frame["prob"])
        axis.plot(fpr, tpr, linewidth=1.3, label=f"{row['method']} (AUC {row['auc']:.3f})")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="lower right", fontsize=7)
    return fig


def _tpr_figure(part: pd.DataFrame, test_sets: Sequence[str], title: str) -> Figure:
    fig = Figure(figsize=(3.2 * len(test_sets), 3.4), layout="constrained")
    axes = fig.subplots(1, len(test_sets), squeeze=False)[0]
    methods = ordered(part["method"])
    positions = np.arange(len(methods))
    for axis, test_set in zip(axes, test_sets):
        rows = part[part["test_set"] == test_set].set_index("method").reindex(methods)
        for offset, column, label in ((-0.2, "tpr_bias0", "bias=0"), (0.2, "tpr_bias1", "bias=1")):
            values = rows[column].to_numpy(dtype=float)
            axis.bar(positions + offset, values, width=0.4, label=label)
            for x in positions[np.isnan(values)] + offset:  # undefined: no positives in this group
                axis.text(x, 0.02, NOT_AVAILABLE, ha="center", va="bottom", rotation=90, fontsize=6, color="0.4")
        axis.set_xticks(positions, methods, rotation=45, ha="right", fontsize=7)
        axis.set(ylim=(0, 1.05), title=test_set, ylabel="TPR")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def write_figures(results: pd.DataFrame, frames: Mapping[str, pd.DataFrame], out_dir: Path) -> dict:
    """Write every scenario's figures into ``out_dir/figures``; returns scenario -> [(title, link)].

    ``frames``: the loaded prediction table of each row's ``predictions`` (the ROC curves).
    """
    links: dict[str, list[tuple[str, str]]] = {}
    for scenario in ordered(results["scenario"]):
        part = results[results["scenario"] == scenario]
        test_sets = ordered(part["test_set"], REPORT_TEST_SETS)
        links[scenario] = []
        for test_set in test_sets:
            link = f"{FIGURE_DIR}/roc__{_slug(scenario)}__{_slug(test_set)}.png"
            title = f"ROC, {scenario}, {test_set}"
            save_figure(_roc_figure(part[part["test_set"] == test_set], frames, title), out_dir / link)
            links[scenario].append((title, link))
        link = f"{FIGURE_DIR}/tpr_by_bias__{_slug(scenario)}.png"
        title = f"TPR per bias group, {scenario}"
        save_figure(_tpr_figure(part, test_sets, title), out_dir / link)
        links[scenario].append((title, link))
    return links
