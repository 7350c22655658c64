"""Results report: ``results.csv``, a markdown summary and figures of every (scenario, method, test set).

The numbers are the protocol's result rows (:mod:`pipeline.evaluation.protocol`), computed once
by each run's evaluate workflow and gathered here (:func:`write_results`); :func:`build_report`
computes them from prediction files made elsewhere. Every row keeps the path of its prediction
file, so :func:`pipeline.evaluation.verification.verify_report` can recompute the report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path, write_csv
from pipeline.evaluation import protocol
from pipeline.evaluation.figures import NOT_AVAILABLE, check_slugs, ordered, save_figure, write_figures
from pipeline.evaluation.prediction_file import load_predictions

__all__ = ["RESULT_COLUMNS", "build_report", "load_results", "save_figure", "write_results"]

RESULT_COLUMNS = ("scenario", "method") + protocol.RESULT_COLUMNS
"""Columns of ``results.csv``, in order; ``pair_predictions`` is the other file of a counterfactual pair."""
SETTING_COLUMNS = protocol.SETTING_COLUMNS
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
NO_RUN = "–"

# results.md "All metrics" columns: header -> results.csv columns shown in the cell.
DETAIL_TABLE = (
    ("n", ("n",)),
    ("AUC [95% CI]", ("auc", "auc_low", "auc_high")),
    ("accuracy", ("accuracy",)),
    ("TPR bias=0", ("tpr_bias0",)),
    ("TPR bias=1", ("tpr_bias1",)),
    ("ΔTPR", ("delta_tpr",)),
    ("ΔFPR", ("delta_fpr",)),
    ("worst-group acc", ("worst_group_accuracy",)),
    ("ECE", ("ece",)),
    ("flip rate", ("flip_rate",)),
)
AUC_CELL = ("auc", "auc_low", "auc_high")


def _stored_path(path: str, out_dir: Path) -> str:
    """Path as written in results.csv: relative to out_dir when possible, so the folder can move."""
    absolute = str(Path(path).resolve())
    try:
        return os.path.relpath(absolute, out_dir.resolve())
    except ValueError:  # another drive on Windows
        return absolute


def _resolve(stored: str, out_dir: Path) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else out_dir / path


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """Read ``results.csv`` of a report folder, keeping names such as "NA" as text.

    Raises:
        FileNotFoundError: the folder has no results.csv.
        ValueError: results.csv lacks columns of :data:`RESULT_COLUMNS`.
    """
    path = Path(out_dir) / RESULTS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"report file {str(path)!r} does not exist")
    numeric = [c for c in RESULT_COLUMNS if c in protocol.NUMBER_COLUMNS or c in SETTING_COLUMNS]
    table = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric})
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"report file {str(path)!r}: missing column(s) {missing}")
    for column in ("scenario", "method", "test_set", "predictions", "pair_predictions"):
        table[column] = table[column].astype(str)
    return table


# ----------------------------------------------------------------------------- markdown


def number_text(value: float) -> str:
    return NOT_AVAILABLE if pd.isna(value) else f"{value:.3f}"


def cell_text(row: Mapping, columns: Sequence[str]) -> str:
    if columns == ("n",):
        return str(int(row["n"]))
    if columns == AUC_CELL:
        if pd.isna(row["auc"]):
            return NOT_AVAILABLE
        return f"{number_text(row['auc'])} [{number_text(row['auc_low'])}, {number_text(row['auc_high'])}]"
    return number_text(row[columns[0]])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _markdown(
    results: pd.DataFrame, figures: Mapping[str, list[tuple[str, str]]], extra: Mapping[str, str],
    notes: Mapping[str, str],
) -> str:  # fmt: skip
    settings = results.iloc[0]
    lines = [
        "# Shortcut evaluation report",
        "",
        f"Every number is computed from the per-sample prediction files listed in `{RESULTS_CSV}` "
        "(column `predictions`); `pipeline.evaluation.verify_report(<this folder>)` recomputes them "
        "and lists any mismatch.",
        f"Predicted class: the `pred` column, else prob >= {settings['threshold']:g}. "
        f"AUC 95% CI: {int(settings['n_boot'])} {'stratified' if settings['stratified'] else 'plain'} bootstrap "
        f"resamples, seed {int(settings['seed'])}. ECE: {int(settings['n_bins'])} equal-width bins. "
        "ΔTPR/ΔFPR: with-artifact group (bias=1) minus without-artifact group (bias=0). "
        f"Flip rate: share of ids whose predicted class differs between cf_with and cf_without. "
        f"{NOT_AVAILABLE}: undefined for this test set; {NO_RUN}: not evaluated. Definitions: docs/metrics.md.",
    ]
    for scenario in ordered(results["scenario"]):
        part = results[results["scenario"] == scenario]
        methods = ordered(part["method"])
        test_sets = ordered(part["test_set"], protocol.REPORT_TEST_SETS)
        lookup = {(r["method"], r["test_set"]): r for _, r in part.iterrows()}
        lines += ["", f"## Scenario `{scenario}`"] + (["", notes[scenario]] if notes.get(scenario) else [])
        lines += ["", "### AUC [95% CI] by test set", ""]
        lines += _table(
            ["method", *test_sets],
            [
                [m] + [cell_text(lookup[(m, t)], AUC_CELL) if (m, t) in lookup else NO_RUN for t in test_sets]
                for m in methods
            ],
        )
        lines += ["", "### All metrics", ""]
        lines += _table(
            ["method", "test set", *(header for header, _ in DETAIL_TABLE)],
            [
                [m, t] + [cell_text(lookup[(m, t)], columns) for _, columns in DETAIL_TABLE]
                for m in methods
                for t in test_sets
                if (m, t) in lookup
            ],
        )
        if figures.get(scenario):
            lines += ["", "### Figures", ""]
            lines += [f"![{title}]({link})" for title, link in figures[scenario]]
    if extra:
        lines += ["", "## Extra figures", ""]
        lines += [f"![{title}]({link})" for title, link in extra.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry points


def write_results(
    results,
    out_dir: str | Path,
    extra_figures: Mapping[str, str | Path] | None = None,
    notes: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write result rows as results.csv, results.md and figures/ into ``out_dir``.

    Args:
        results: rows with :data:`RESULT_COLUMNS` (DataFrame or dicts), e.g. gathered from the runs'
            ``eval/results.json`` (:func:`pipeline.evaluation.protocol.read_results`) or computed
            by :func:`pipeline.evaluation.protocol.results_table`; prediction paths absolute or
            relative to the working directory (stored relative to ``out_dir``).
        out_dir: report folder (created).
        extra_figures: title -> path of figures made elsewhere (layer curves, saliency grids),
            linked at the end of results.md.
        notes: scenario -> a paragraph written under the scenario's heading (e.g. which test sets
            pre-biased data allowed).

    Returns:
        Written files, keyed by their path relative to ``out_dir``.

    Raises:
        ValueError: bad names (:func:`pipeline.evaluation.protocol.check_runs`), two names with
            the same figure file name, an extra figure that does not exist, or an invalid prediction file.
        FileNotFoundError: a prediction file is missing.
    """
    results = protocol.results_frame(results)
    protocol.check_runs(results[list(protocol.RUN_COLUMNS)])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {}
    for title, path in (extra_figures or {}).items():
        if not Path(path).is_file():
            raise ValueError(f"extra_figures[{title!r}]: file {str(path)!r} does not exist")
        extra[str(title)] = _stored_path(str(path), out_dir).replace(os.sep, "/")
    check_slugs(ordered(results["scenario"]), "scenario")
    check_slugs(ordered(results["test_set"]), "test_set")
    frames = {}
    for column in ("predictions", "pair_predictions"):
        results[column] = [_stored_path(p, out_dir) if p else "" for p in results[column]]
    for stored in results["predictions"]:
        if stored not in frames:
            frames[stored] = load_predictions(_resolve(stored, out_dir))
    links = write_figures(results, frames, out_dir)
    written = {link: out_dir / link for scenario_links in links.values() for _, link in scenario_links}
    written[RESULTS_CSV] = write_csv(results, out_dir / RESULTS_CSV)
    with atomic_path(out_dir / RESULTS_MD) as tmp:
        tmp.write_text(_markdown(results, links, extra, notes or {}), encoding="utf-8")
    written[RESULTS_MD] = out_dir / RESULTS_MD
    return written


def build_report(
    runs,
    out_dir: str | Path,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    stratified: bool = True,
    extra_figures: Mapping[str, str | Path] | None = None,
    notes: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """The report of prediction files made elsewhere: the protocol's numbers of every run
    (:func:`pipeline.evaluation.protocol.results_table`), written by :func:`write_results`.

    Args:
        runs: DataFrame or list of dicts with the columns ``scenario``, ``method``, ``test_set``
            (e.g. in_distribution, bias_free, bias_inverted, cf_with, cf_without, ood) and
            ``predictions`` (path of a per-sample prediction CSV).
        threshold, n_boot, seed, n_bins, stratified: the protocol's settings (:data:`pipeline.evaluation.protocol.SETTINGS`).
        out_dir, extra_figures, notes: as :func:`write_results`.

    Raises:
        ValueError: bad runs (:func:`pipeline.evaluation.protocol.check_runs`), or as :func:`write_results`.
        FileNotFoundError: a prediction file is missing.
    """
    settings = {"threshold": threshold, "n_boot": n_boot, "seed": seed, "n_bins": n_bins, "stratified": stratified}
    return write_results(protocol.results_table(runs, **settings), out_dir, extra_figures, notes)
