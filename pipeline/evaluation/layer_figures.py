"""Figures of the layer analysis: shortcut sensitivity per stage, one panel per scenario and metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from pipeline.atomic import write_csv
from pipeline.evaluation.figures import save_figure

# the files of a layer analysis folder
LAYERS_CSV, DEPTH_CSV, CURVES_PNG = "layers.csv", "prediction_depth.csv", "layer_curves.png"
LAYER_COLUMNS = ("model", "stage", "stage_index", "metric", "value")
SHORTCUT_METRICS = ("probe_auc_bias", "counterfactual_kl")

_METRIC_TITLES = {
    "probe_auc_bias": "bias-probe AUC",
    "probe_auc_label": "label-probe AUC",
    "counterfactual_kl": "counterfactual KL (without || with)",
    "knn_agreement": "k-NN agrees with final prediction",
    "decided_bias0": "share decided, bias=0",
    "decided_bias1": "share decided, bias=1",
}


def _check_table(scenario: str, table) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"tables[{scenario!r}] must be a DataFrame, got {type(table).__name__}")
    missing = [c for c in LAYER_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"tables[{scenario!r}] lacks column(s) {missing}; required {list(LAYER_COLUMNS)}")
    return table


def plot_layer_curves(
    tables: Mapping[str, pd.DataFrame], out_png: str | Path, metrics: Sequence[str] = SHORTCUT_METRICS
) -> Path:
    """Shortcut sensitivity per stage: one column per scenario, one row per metric, one line per model.

    Use it to put a localized and a diffuse scenario side by side, e.g.
    ``plot_layer_curves({"patch": patch_table, "noise": noise_table}, "layers.png")``.

    Args:
        tables: scenario -> table of :func:`pipeline.evaluation.layers.analyse_layers` (read from ``layers.csv`` or returned).
        out_png: PNG path (written atomically).
        metrics: metrics drawn, one row each; a metric missing from a table leaves a note.

    Returns:
        ``out_png`` as a Path.

    Raises:
        ValueError: for no tables or metrics, or a table without the layer columns.
    """
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError(f"tables must be a non-empty mapping scenario -> layer table, got {tables!r}")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric, e.g. ['probe_auc_bias', 'counterfactual_kl']")
    checked = {str(s): _check_table(str(s), t) for s, t in tables.items()}
    fig = Figure(figsize=(4.2 * len(checked), 3.0 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(checked), squeeze=False)
    for column, (scenario, table) in enumerate(checked.items()):
        for row, metric in enumerate(metrics):
            axis = axes[row][column]
            part = table[table["metric"] == metric]
            axis.set(ylabel=_METRIC_TITLES.get(metric, metric), title=scenario if row == 0 else "")
            if part.empty:
                axis.text(0.5, 0.5, f"{metric}: not computed", ha="center", va="center", transform=axis.transAxes)
                continue
            stage_lists = set()
            for model, curve in part.groupby("model", sort=False):
                curve = curve.sort_values("stage_index")
                stage_lists.add(tuple(curve["stage"]))
                axis.plot(curve["stage_index"], curve["value"], marker="o", linewidth=1.3, label=str(model))
            if len(stage_lists) == 1:
                names = next(iter(stage_lists))
                axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
            else:
                axis.set_xlabel("stage index")
            if metric.startswith("probe_auc"):
                axis.axhline(0.5, color="0.7", linestyle="--", linewidth=0.8)
                axis.set_ylim(0.0, 1.02)
            axis.legend(fontsize=7)
    return save_figure(fig, out_png)


def combine_layer_outputs(folders: Mapping[str, str | Path], out_dir: str | Path) -> Path | None:
    """One scenario's layer analysis from the per-model folders the ``layers`` workflow wrote.

    Concatenates each folder's ``layers.csv`` and ``prediction_depth.csv`` (in the order of
    ``folders``; a folder without them is left out) into ``out_dir`` and draws their
    ``layer_curves.png``. Returns the figure's path, or None when no folder holds a table.
    """
    found = {name: Path(folder) for name, folder in folders.items() if (Path(folder) / LAYERS_CSV).is_file()}
    if not found:
        return None
    out_dir = Path(out_dir)
    table = pd.concat([pd.read_csv(f / LAYERS_CSV) for f in found.values()], ignore_index=True)
    depths = pd.concat([pd.read_csv(f / DEPTH_CSV, dtype={"id": str}) for f in found.values()], ignore_index=True)
    write_csv(table, out_dir / LAYERS_CSV)
    write_csv(depths, out_dir / DEPTH_CSV)
    return plot_layer_curves({"layer analysis": table}, out_dir / CURVES_PNG)


def compare_scenarios(folders: Mapping[str, str | Path], out_png: str | Path) -> Path | None:
    """Scenarios side by side (e.g. a localized and a diffuse shortcut), from each scenario's
    folder of :func:`combine_layer_outputs`; None unless at least two hold a table."""
    tables = {s: Path(f) / LAYERS_CSV for s, f in folders.items()}
    tables = {s: pd.read_csv(p) for s, p in tables.items() if p.is_file()}
    if len(tables) < 2:
        return None
    return plot_layer_curves(tables, out_png)
