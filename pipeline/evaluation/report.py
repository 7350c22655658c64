"""Results report: a CSV and a markdown summary of every (scenario, method, test set), plus figures.

Every number is computed from the per-sample prediction files, whose paths are stored in
``results.csv``; :func:`verify_report` recomputes them and lists any number in ``results.csv``
or ``results.md`` that does not match, so a report can be checked after the fact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.atomic import atomic_path, write_csv
from pipeline.evaluation.metrics import METRIC_COLUMNS, flip_rate, load_predictions, roc_curve, summarize

RUN_COLUMNS = ("scenario", "method", "test_set", "predictions")
KNOWN_TEST_SETS = ("in_distribution", "bias_free", "bias_inverted", "cf_with", "cf_without", "ood")
COUNTERFACTUAL_PAIR = ("cf_with", "cf_without")
SETTING_COLUMNS = ("threshold", "n_boot", "seed", "n_bins", "stratified")
RESULT_COLUMNS = (
    ("scenario", "method", "test_set", "predictions", "pair_predictions")
    + SETTING_COLUMNS
    + METRIC_COLUMNS
    + ("flip_rate",)
)
"""Columns of ``results.csv``, in order; ``pair_predictions`` is the other file of a counterfactual pair."""

RESULTS_CSV, RESULTS_MD, FIGURE_DIR = "results.csv", "results.md", "figures"
_NUMBER_COLUMNS = METRIC_COLUMNS + ("flip_rate",)
_FORBIDDEN_IN_NAMES = re.compile(r"[|`\n\r]")
_NOT_AVAILABLE = "n/a"
_NO_RUN = "–"

# results.md "All metrics" columns: header -> results.csv columns shown in the cell.
_DETAIL_TABLE = (
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
_AUC_CELL = ("auc", "auc_low", "auc_high")


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG under a temporary name, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


# ----------------------------------------------------------------------------- runs


def _check_runs(runs) -> pd.DataFrame:
    table = pd.DataFrame(list(runs)) if not isinstance(runs, pd.DataFrame) else runs.copy()
    if len(table) == 0:
        raise ValueError("runs: has no rows; give at least one (scenario, method, test_set, predictions)")
    missing = [c for c in RUN_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"runs: missing column(s) {missing}; required {list(RUN_COLUMNS)}, found {list(table.columns)}")
    table = table.reset_index(drop=True)
    for column in RUN_COLUMNS:
        for row, value in table[column].items():
            if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
                raise ValueError(f"runs: row {row} column {column!r} must be a non-empty string, got {value!r}")
            if column != "predictions" and _FORBIDDEN_IN_NAMES.search(str(value)):
                raise ValueError(
                    f"runs: row {row} column {column!r} = {value!r} must not contain '|', '`' or line breaks"
                )
        table[column] = table[column].map(str)
    repeated = table.duplicated(["scenario", "method", "test_set"], keep=False)
    if repeated.any():
        rows = table.loc[repeated, ["scenario", "method", "test_set"]].drop_duplicates()
        raise ValueError(f"runs: each (scenario, method, test_set) must appear once; repeated: {rows.values.tolist()}")
    for (scenario, method), group in table.groupby(["scenario", "method"], sort=False):
        present = set(group["test_set"]) & set(COUNTERFACTUAL_PAIR)
        if len(present) == 1:
            have, lack = (COUNTERFACTUAL_PAIR if "cf_with" in present else COUNTERFACTUAL_PAIR[::-1])
            raise ValueError(f"runs: scenario {scenario!r} method {method!r} has test_set {have!r} but not {lack!r}")
    return table


def _ordered(values: Sequence[str], known: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in known if v in seen] + [v for v in seen if v not in known]


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


# ----------------------------------------------------------------------------- numbers


def _results_table(runs: pd.DataFrame, base_dir: Path, settings: Mapping, cache: dict) -> pd.DataFrame:
    """One results row per run; ``runs.predictions`` are resolved against ``base_dir``."""

    def predictions(stored: str) -> pd.DataFrame:
        path = _resolve(stored, base_dir)
        if path not in cache:
            cache[path] = load_predictions(path)
        return cache[path]

    rows = []
    for run in runs.itertuples(index=False):
        row = {"scenario": run.scenario, "method": run.method, "test_set": run.test_set}
        row["predictions"], row["pair_predictions"] = run.predictions, ""
        row.update({key: settings[key] for key in SETTING_COLUMNS})
        row.update(
            summarize(
                predictions(run.predictions),
                threshold=settings["threshold"],
                n_boot=int(settings["n_boot"]),
                seed=int(settings["seed"]),
                n_bins=int(settings["n_bins"]),
                stratified=bool(settings["stratified"]),
            )
        )
        row["flip_rate"] = float("nan")
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for (_, _), group in table.groupby(["scenario", "method"], sort=False):
        by_set = dict(zip(group["test_set"], group.index))
        if not set(COUNTERFACTUAL_PAIR) <= set(by_set):
            continue
        with_row, without_row = by_set["cf_with"], by_set["cf_without"]
        rate = flip_rate(
            predictions(table.at[with_row, "predictions"]),
            predictions(table.at[without_row, "predictions"]),
            threshold=settings["threshold"],
        )
        table.loc[[with_row, without_row], "flip_rate"] = rate
        table.at[with_row, "pair_predictions"] = table.at[without_row, "predictions"]
        table.at[without_row, "pair_predictions"] = table.at[with_row, "predictions"]
    return table


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """Read ``results.csv`` of a report folder, keeping names such as "NA" as text.

    Raises:
        FileNotFoundError: the folder has no results.csv.
        ValueError: results.csv lacks columns of :data:`RESULT_COLUMNS`.
    """
    path = Path(out_dir) / RESULTS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"report file {str(path)!r} does not exist")
    numeric = [c for c in RESULT_COLUMNS if c in _NUMBER_COLUMNS or c in SETTING_COLUMNS]
    table = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric})
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"report file {str(path)!r}: missing column(s) {missing}")
    for column in ("scenario", "method", "test_set", "predictions", "pair_predictions"):
        table[column] = table[column].astype(str)
    return table


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
    cache: dict = {}
    parts = []
    for _, group in stored.groupby(list(SETTING_COLUMNS), sort=False, dropna=False):
        settings = group.iloc[0][list(SETTING_COLUMNS)].to_dict()
        recomputed = _results_table(group[list(RUN_COLUMNS)], out_dir, settings, cache)
        parts.append(recomputed.set_axis(group.index))
    return pd.concat(parts).loc[stored.index, list(RESULT_COLUMNS)]


# ----------------------------------------------------------------------------- markdown


def _number(value: float) -> str:
    return _NOT_AVAILABLE if pd.isna(value) else f"{value:.3f}"


def _cell(row: Mapping, columns: Sequence[str]) -> str:
    if columns == ("n",):
        return str(int(row["n"]))
    if columns == _AUC_CELL:
        if pd.isna(row["auc"]):
            return _NOT_AVAILABLE
        return f"{_number(row['auc'])} [{_number(row['auc_low'])}, {_number(row['auc_high'])}]"
    return _number(row[columns[0]])


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
        "(column `predictions`); `pipeline.evaluation.report.verify_report(<this folder>)` recomputes them "
        "and lists any mismatch.",
        f"Predicted class: the `pred` column, else prob >= {settings['threshold']:g}. "
        f"AUC 95% CI: {int(settings['n_boot'])} {'stratified' if settings['stratified'] else 'plain'} bootstrap "
        f"resamples, seed {int(settings['seed'])}. ECE: {int(settings['n_bins'])} equal-width bins. "
        "ΔTPR/ΔFPR: with-artifact group (bias=1) minus without-artifact group (bias=0). "
        f"Flip rate: share of ids whose predicted class differs between cf_with and cf_without. "
        f"{_NOT_AVAILABLE}: undefined for this test set; {_NO_RUN}: not evaluated. Definitions: docs/metrics.md.",
    ]
    for scenario in _ordered(results["scenario"]):
        part = results[results["scenario"] == scenario]
        methods = _ordered(part["method"])
        test_sets = _ordered(part["test_set"], KNOWN_TEST_SETS)
        lookup = {(r["method"], r["test_set"]): r for _, r in part.iterrows()}
        lines += ["", f"## Scenario `{scenario}`"] + (["", notes[scenario]] if notes.get(scenario) else [])
        lines += ["", "### AUC [95% CI] by test set", ""]
        lines += _table(
            ["method", *test_sets],
            [
                [m] + [_cell(lookup[(m, t)], _AUC_CELL) if (m, t) in lookup else _NO_RUN for t in test_sets]
                for m in methods
            ],
        )
        lines += ["", "### All metrics", ""]
        lines += _table(
            ["method", "test set", *(header for header, _ in _DETAIL_TABLE)],
            [
                [m, t] + [_cell(lookup[(m, t)], columns) for _, columns in _DETAIL_TABLE]
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


# ----------------------------------------------------------------------------- figures


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unnamed"


def _check_slugs(names: Sequence[str], what: str) -> None:
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
    methods = _ordered(part["method"])
    positions = np.arange(len(methods))
    for axis, test_set in zip(axes, test_sets):
        rows = part[part["test_set"] == test_set].set_index("method").reindex(methods)
        for offset, column, label in ((-0.2, "tpr_bias0", "bias=0"), (0.2, "tpr_bias1", "bias=1")):
            values = rows[column].to_numpy(dtype=float)
            axis.bar(positions + offset, values, width=0.4, label=label)
            for x in positions[np.isnan(values)] + offset:  # undefined: no positives in this group
                axis.text(x, 0.02, _NOT_AVAILABLE, ha="center", va="bottom", rotation=90, fontsize=6, color="0.4")
        axis.set_xticks(positions, methods, rotation=45, ha="right", fontsize=7)
        axis.set(ylim=(0, 1.05), title=test_set, ylabel="TPR")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def _write_figures(results: pd.DataFrame, frames: Mapping[str, pd.DataFrame], out_dir: Path) -> dict:
    links: dict[str, list[tuple[str, str]]] = {}
    for scenario in _ordered(results["scenario"]):
        part = results[results["scenario"] == scenario]
        test_sets = _ordered(part["test_set"], KNOWN_TEST_SETS)
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


# ----------------------------------------------------------------------------- entry points


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
    """Compute every metric of every run and write results.csv, results.md and figures/ into ``out_dir``.

    Args:
        runs: DataFrame or list of dicts with the columns ``scenario``, ``method``, ``test_set``
            (e.g. in_distribution, bias_free, bias_inverted, cf_with, cf_without, ood) and
            ``predictions`` (path of a per-sample prediction CSV).
        out_dir: report folder (created); prediction paths are stored relative to it.
        threshold: class-1 threshold for files without a ``pred`` column.
        n_boot: bootstrap resamples of the AUC interval.
        seed: bootstrap seed.
        n_bins: equal-width bins of the ECE.
        stratified: stratified (by label) bootstrap.
        extra_figures: title -> path of figures made elsewhere (layer curves, saliency grids),
            linked at the end of results.md.
        notes: scenario -> a paragraph written under the scenario's heading (e.g. which test sets
            pre-biased data allowed).

    Returns:
        Written files, keyed by their path relative to ``out_dir``.

    Raises:
        ValueError: a required column is missing, a name is empty or contains '|', '`' or a line
            break, a (scenario, method, test_set) repeats, a counterfactual file lacks its pair,
            an extra figure does not exist, or a prediction file is invalid.
        FileNotFoundError: a prediction file is missing.
    """
    table = _check_runs(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {}
    for title, path in (extra_figures or {}).items():
        if not Path(path).is_file():
            raise ValueError(f"extra_figures[{title!r}]: file {str(path)!r} does not exist")
        extra[str(title)] = _stored_path(str(path), out_dir).replace(os.sep, "/")
    _check_slugs(_ordered(table["scenario"]), "scenario")
    _check_slugs(_ordered(table["test_set"]), "test_set")
    settings = {"threshold": threshold, "n_boot": n_boot, "seed": seed, "n_bins": n_bins, "stratified": stratified}
    table["predictions"] = [_stored_path(p, out_dir) for p in table["predictions"]]
    cache: dict = {}
    results = _results_table(table, out_dir, settings, cache)
    frames = {stored: cache[_resolve(stored, out_dir)] for stored in results["predictions"]}
    links = _write_figures(results, frames, out_dir)
    written = {link: out_dir / link for scenario_links in links.values() for _, link in scenario_links}
    written[RESULTS_CSV] = write_csv(results, out_dir / RESULTS_CSV)
    with atomic_path(out_dir / RESULTS_MD) as tmp:
        tmp.write_text(_markdown(results, links, extra, notes or {}), encoding="utf-8")
    written[RESULTS_MD] = out_dir / RESULTS_MD
    return written


def _parse_numbers(cell: str) -> list[float]:
    tokens = re.findall(r"n/a|[-+]?\d+(?:\.\d+)?", cell)
    return [float("nan") if token == _NOT_AVAILABLE else float(token) for token in tokens]


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
    """Recompute a report folder and list every number of results.csv / results.md that differs.

    results.csv numbers must match to floating-point precision; results.md numbers to their
    printed decimals. Every results.csv row must appear in the "All metrics" tables.

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
        for column in _NUMBER_COLUMNS:
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
    detail_header = ["method", "test set", *(header for header, _ in _DETAIL_TABLE)]
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
            for (title, columns), cell in zip(_DETAIL_TABLE, cells[2:]):
                mismatches += _check_cell(f"results.md line {line} {key} {title!r}", cell, lookup[key], columns)
        elif header[0] == "method":
            for test_set, cell in zip(header[1:], cells[1:]):
                key = (scenario, cells[0], test_set)
                if key not in lookup:
                    if cell != _NO_RUN:
                        mismatches.append(f"results.md line {line}: {key} shows {cell!r} but is not in results.csv")
                    continue
                mismatches += _check_cell(f"results.md line {line} {key} AUC", cell, lookup[key], _AUC_CELL)
        else:
            mismatches.append(f"results.md line {line}: table with unknown header {header}")
    for key in lookup:
        if key not in shown_rows:
            mismatches.append(f"results.md: no 'All metrics' row for {key}")
    return mismatches
