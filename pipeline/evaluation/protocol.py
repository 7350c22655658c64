"""The evaluation protocol: the test sets, every number computed on them, and the paper's claims.

- Test sets (:data:`TEST_SETS`): a datalist role seen through the shortcut injection in one mode,
  so one datalist gives the in-distribution, bias-free, bias-inverted and counterfactual sets
  (and ``ood`` when the datalist has a ``test_ood`` role). ``cf_without``, the other half of the
  counterfactual pair, is the bias-free set's prediction file (the same images, artifact off).
- Per test set, :func:`summarize` computes every single-file metric (:data:`METRIC_COLUMNS`) from
  its prediction file (:mod:`pipeline.evaluation.prediction_file`); :func:`result_rows` adds the
  flip rate of the counterfactual pair. The evaluate workflow computes them once
  (:func:`write_results`: ``eval/results.json`` and ``eval/metrics.json``); the report gathers
  them (:func:`read_results`) and ``verify_report`` recomputes them with :func:`results_table`.
- Claims: :func:`counterfactual_delta_tpr` and :func:`acceptance` (ERM's gap to the reference and
  the share of it that distillation closes).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_json
from pipeline.evaluation.metrics import (
    UndefinedMetricWarning,
    accuracy,
    auc_with_ci,
    delta_fpr,
    delta_tpr,
    expected_calibration_error,
    group_accuracies,
    rates_by_group,
)
from pipeline.evaluation.prediction_file import load_predictions, predicted_labels, validate_predictions

TEST_SETS: dict[str, dict[str, str]] = {
    "in_distribution": {"role": "test", "mode": "as_trained"},
    "bias_free": {"role": "test", "mode": "never"},
    "bias_inverted": {"role": "test", "mode": "inverted"},
    "cf_with": {"role": "test", "mode": "always"},
    "ood": {"role": "test_ood", "mode": "as_trained"},
}
"""name -> datalist role and injection mode (:class:`pipeline.transforms.ShortcutInjectiond`)."""
OPTIONAL_ROLES = ("test_ood",)
"""Roles whose test sets are skipped when the datalist lacks them (any other missing role is an error)."""
COUNTERFACTUAL_PAIR = ("cf_with", "cf_without")
PAIR_FILES = {"cf_without": "bias_free"}
"""A pair half that reuses another test set's prediction file."""
REPORT_TEST_SETS = ("in_distribution", "bias_free", "bias_inverted", "cf_with", "cf_without", "ood")
"""Test sets in the order the report shows them."""
ONE_ARTIFACT_GROUP = ("bias_free", "cf_with", "cf_without")
"""Sets with one artifact group by design: their ΔTPR/ΔFPR are NaN without a warning."""

SETTINGS = {"threshold": 0.5, "n_boot": 1000, "seed": 0, "n_bins": 10, "stratified": True}
"""Defaults of :func:`summarize`'s settings, recorded in every result row."""
SETTING_COLUMNS = tuple(SETTINGS)
METRIC_COLUMNS = (
    "n", "n_positive", "n_negative", "n_bias", "auc", "auc_low", "auc_high", "accuracy", "tpr", "fpr",
    "tpr_bias0", "tpr_bias1", "fpr_bias0", "fpr_bias1", "delta_tpr", "delta_fpr", "acc_label0_bias0",
    "acc_label0_bias1", "acc_label1_bias0", "acc_label1_bias1", "worst_group_accuracy", "ece",
)  # fmt: skip
"""Keys of :func:`summarize`, in order."""
RUN_COLUMNS = ("scenario", "method", "test_set", "predictions")
RESULT_COLUMNS = (
    ("test_set", "predictions", "pair_predictions") + SETTING_COLUMNS + METRIC_COLUMNS + ("flip_rate",)
)
"""Keys of a result row; ``pair_predictions`` is the other file of a counterfactual pair."""
NUMBER_COLUMNS = METRIC_COLUMNS + ("flip_rate",)
RESULTS_JSON, METRICS_JSON, TEST_SETS_JSON = "results.json", "metrics.json", "test_sets.json"
_FORBIDDEN_IN_NAMES = re.compile(r"[|`\n\r]")


def named_test_sets(role: str = "test") -> dict[str, dict[str, str]]:
    """:data:`TEST_SETS` with the ``test`` role read from ``role`` (a bundle's ``test_role``)."""
    return {name: {**spec, "role": role if spec["role"] == "test" else spec["role"]} for name, spec in TEST_SETS.items()}


# ----------------------------------------------------------------------------- one test set


def summarize(
    df: pd.DataFrame,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    stratified: bool = True,
) -> dict[str, float]:
    """Every single-file metric of one prediction table, as a flat dict (keys: :data:`METRIC_COLUMNS`).

    Undefined values (e.g. ΔTPR on a test set without artifacts) are NaN; the group-wise TPR/FPR
    and the accuracy of an empty label x bias group are NaN without a warning.

    Args:
        df: prediction table (validated here; see :func:`validate_predictions`).
        threshold: class-1 threshold on ``prob`` when there is no ``pred`` column.
        n_boot: bootstrap resamples for the AUC interval.
        seed: bootstrap seed.
        n_bins: equal-width bins for the ECE.
        stratified: stratified (by label) bootstrap.

    Raises:
        ValueError: invalid table or parameters.
    """
    df = validate_predictions(df)
    labels, bias, probs = df["label"].to_numpy(), df["bias"].to_numpy(), df["prob"].to_numpy()
    preds = predicted_labels(df, threshold)
    point, low, high = auc_with_ci(labels, probs, n_boot=n_boot, seed=seed, stratified=stratified)
    by_bias = rates_by_group(labels, preds, bias).reindex([0, 1])
    overall = rates_by_group(labels, preds, np.zeros_like(labels)).iloc[0]
    accuracies = group_accuracies(labels, preds, bias)
    summary = {
        "n": len(df),
        "n_positive": int(labels.sum()),
        "n_negative": int(len(labels) - labels.sum()),
        "n_bias": int(bias.sum()),
        "auc": point,
        "auc_low": low,
        "auc_high": high,
        "accuracy": accuracy(labels, preds),
        "tpr": float(overall["tpr"]),
        "fpr": float(overall["fpr"]),
        "tpr_bias0": float(by_bias.loc[0, "tpr"]),
        "tpr_bias1": float(by_bias.loc[1, "tpr"]),
        "fpr_bias0": float(by_bias.loc[0, "fpr"]),
        "fpr_bias1": float(by_bias.loc[1, "fpr"]),
        "delta_tpr": delta_tpr(labels, preds, bias),
        "delta_fpr": delta_fpr(labels, preds, bias),
        **{f"acc_label{y}_bias{b}": accuracies.get((y, b), float("nan")) for y in (0, 1) for b in (0, 1)},
        "worst_group_accuracy": min(accuracies.values()),
        "ece": expected_calibration_error(labels, probs, n_bins=n_bins),
    }
    return {key: summary[key] for key in METRIC_COLUMNS}


def flip_rate(with_artifact: pd.DataFrame, without_artifact: pd.DataFrame, threshold: float = 0.5) -> float:
    """Share of ids whose predicted class changes between the counterfactual pair of files.

    Args:
        with_artifact: predictions on the images with the artifact always on (``cf_with``).
        without_artifact: predictions on the same images with the artifact always off (``cf_without``).
        threshold: used for a file without a ``pred`` column.

    Raises:
        ValueError: a table is invalid (see :func:`validate_predictions`), the two tables do not
            hold exactly the same ids, or ``threshold`` is not in [0, 1].
    """
    with_artifact = validate_predictions(with_artifact, source="cf_with predictions")
    without_artifact = validate_predictions(without_artifact, source="cf_without predictions")
    ids_with, ids_without = set(with_artifact["id"]), set(without_artifact["id"])
    if ids_with != ids_without:
        only_with = sorted(ids_with - ids_without)[:5]
        only_without = sorted(ids_without - ids_with)[:5]
        raise ValueError(
            "flip_rate needs the same unique ids in cf_with and cf_without; "
            f"only in cf_with: {only_with}, only in cf_without: {only_without}"
        )
    pred_with = pd.Series(predicted_labels(with_artifact, threshold), index=with_artifact["id"])
    pred_without = pd.Series(predicted_labels(without_artifact, threshold), index=without_artifact["id"])
    return float(np.mean(pred_with.to_numpy() != pred_without.loc[pred_with.index].to_numpy()))


# ----------------------------------------------------------------------------- result rows


def result_rows(
    files: Mapping[str, str | os.PathLike],
    base_dir: str | Path | None = None,
    settings: Mapping | None = None,
    cache: dict | None = None,
) -> list[dict]:
    """The protocol's numbers of one model: one row (:data:`RESULT_COLUMNS`) per test set.

    Args:
        files: test set name -> prediction file (as stored in the rows), in row order; with both
            halves of :data:`COUNTERFACTUAL_PAIR`, their rows get the pair's flip rate.
        base_dir: folder that relative paths in ``files`` are resolved against (default: as given).
        settings: overrides of :data:`SETTINGS`.
        cache: resolved path -> loaded table, shared between calls.

    Raises:
        FileNotFoundError, ValueError: a prediction file is missing or invalid.
    """
    settings = {**SETTINGS, **(settings or {})}
    cache = {} if cache is None else cache

    def table(stored) -> pd.DataFrame:
        path = Path(stored) if base_dir is None or Path(stored).is_absolute() else Path(base_dir) / stored
        if path not in cache:
            cache[path] = load_predictions(path)
        return cache[path]

    rows = []
    for test_set, stored in files.items():
        row = {"test_set": test_set, "predictions": str(stored), "pair_predictions": "", **settings}
        with warnings.catch_warnings():
            if test_set in ONE_ARTIFACT_GROUP:  # one artifact group is empty by design: ΔTPR/ΔFPR are NaN
                warnings.simplefilter("ignore", UndefinedMetricWarning)
            row.update(
                summarize(
                    table(stored), threshold=settings["threshold"], n_boot=int(settings["n_boot"]),
                    seed=int(settings["seed"]), n_bins=int(settings["n_bins"]), stratified=bool(settings["stratified"]),
                )  # fmt: skip
            )
        rows.append({**row, "flip_rate": float("nan")})
    by_set = {row["test_set"]: row for row in rows}
    if set(COUNTERFACTUAL_PAIR) <= set(by_set):
        with_row, without_row = (by_set[name] for name in COUNTERFACTUAL_PAIR)
        rate = flip_rate(table(with_row["predictions"]), table(without_row["predictions"]), settings["threshold"])
        with_row.update(flip_rate=rate, pair_predictions=without_row["predictions"])
        without_row.update(flip_rate=rate, pair_predictions=with_row["predictions"])
    return rows


def check_runs(runs) -> pd.DataFrame:
    """Validate runs (:data:`RUN_COLUMNS`: scenario, method, test_set, prediction file) as a table.

    Raises:
        ValueError: no rows, a missing column, an empty name or one with '|', '`' or a line break,
            a repeated (scenario, method, test_set), or one half of a counterfactual pair alone.
    """
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
            have, lack = COUNTERFACTUAL_PAIR if "cf_with" in present else COUNTERFACTUAL_PAIR[::-1]
            raise ValueError(f"runs: scenario {scenario!r} method {method!r} has test_set {have!r} but not {lack!r}")
    return table


def results_table(runs, base_dir: str | Path | None = None, **settings) -> pd.DataFrame:
    """Result rows (scenario, method + :data:`RESULT_COLUMNS`) of every run, in the runs' order.

    Args:
        runs: DataFrame or dicts with :data:`RUN_COLUMNS` (see :func:`check_runs`).
        base_dir: folder that relative prediction paths are resolved against.
        settings: overrides of :data:`SETTINGS`.
    """
    table = check_runs(runs)
    cache: dict = {}
    rows: dict[int, dict] = {}
    for (scenario, method), group in table.groupby(["scenario", "method"], sort=False):
        files = dict(zip(group["test_set"], group["predictions"]))
        for index, row in zip(group.index, result_rows(files, base_dir, settings, cache)):
            rows[index] = {"scenario": scenario, "method": method, **row}
    return results_frame([rows[index] for index in table.index])


def results_frame(rows) -> pd.DataFrame:
    """Result rows as a table with the columns in order and missing numbers (null in JSON) as NaN."""
    table = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    columns = [c for c in ("scenario", "method") if c in table.columns] + list(RESULT_COLUMNS)
    table = table.reindex(columns=columns)
    for column in NUMBER_COLUMNS:
        table[column] = pd.to_numeric(table[column])
    return table


# ----------------------------------------------------------------------------- a run's eval folder


def write_results(eval_dir: str | Path, evaluated: Mapping[str, str | os.PathLike]) -> list[dict]:
    """Compute the result rows of one model's evaluated test sets, once, into ``eval_dir``.

    Writes ``results.json`` (the rows, prediction files relative to ``eval_dir``; with ``cf_with``
    also the ``cf_without`` row) and ``metrics.json`` (``{test set: metrics}``, the bundle's summary).

    Args:
        evaluated: test set name -> its prediction file, in evaluation order.
    """
    eval_dir = Path(eval_dir)
    files = {name: os.path.relpath(Path(path).resolve(), eval_dir.resolve()) for name, path in evaluated.items()}
    for half, source in PAIR_FILES.items():
        if "cf_with" in files and source in files:
            files[half] = files[source]
    rows = result_rows(files, eval_dir)
    write_json(rows, eval_dir / RESULTS_JSON)
    write_json(
        {row["test_set"]: {k: row[k] for k in NUMBER_COLUMNS} for row in rows if row["test_set"] in evaluated},
        eval_dir / METRICS_JSON,
    )
    return rows


def read_results(eval_dir: str | Path) -> list[dict]:
    """The result rows a run's evaluate workflow wrote, prediction paths made absolute.

    Raises:
        FileNotFoundError: ``eval_dir`` has no ``results.json`` (the evaluate workflow did not run).
    """
    eval_dir = Path(eval_dir).absolute()
    path = eval_dir / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the bundle's evaluate workflow first")
    rows = json.loads(path.read_text())
    for row in rows:
        for key in ("predictions", "pair_predictions"):
            row[key] = str(eval_dir / row[key]) if row[key] else ""
    return rows


# ----------------------------------------------------------------------------- claims


def counterfactual_delta_tpr(metrics: Mapping[str, Mapping]) -> float | None:
    """TPR with the artifact minus without on the same test positives (``cf_with`` vs ``cf_without``,
    the bias-free set's file), from ``{test set: metrics}``; None when a half is missing.

    The in-distribution ΔTPR compares the few positives the training rates leave without the
    artifact (5% of them by default: 25 of 1,000 test images) with the rest; the counterfactual
    pairs compare every positive with and without it, a much tighter estimate of the same gap.
    """
    with_artifact = metrics.get("cf_with", {}).get("tpr_bias1")
    without = metrics.get("cf_without", metrics.get("bias_free", {})).get("tpr_bias0")
    return None if with_artifact is None or without is None else with_artifact - without


def gap_closed(erm_auc: float, reference_auc: float, auc: float) -> float | None:
    """Share of ERM's bias-inverted AUC gap to the reference that a model closes.

    None unless the reference is above ERM: a reference at or below ERM (one that did not learn the
    task, say) leaves no gap to close, and the ratio's sign would turn a better model negative.
    """
    gap = reference_auc - erm_auc
    return (auc - erm_auc) / gap if gap > 0 else None


# Honest scoring: a model has "removed" the shortcut only if adding the artifact moves its TPR by at
# most MAX_CF_DELTA_TPR either way (counterfactual pairs) and it keeps the finding (bias-free AUC at
# most MAX_BIAS_FREE_LOSS below ERM's). A counterfactual ΔTPR below -MAX_CF_DELTA_TPR relies on the
# artifact in the other direction ("over-corrected"), however high its bias-inverted AUC.
MAX_CF_DELTA_TPR = 0.10
MAX_BIAS_FREE_LOSS = 0.02
VERDICTS = ("removed", "over-corrected", "kept", "finding lost", "n/a")


def shortcut_verdict(
    cf_delta_tpr: float | None,
    bias_free_auc: float | None,
    erm_bias_free_auc: float | None,
    max_bias_free_loss: float = MAX_BIAS_FREE_LOSS,
) -> str:
    """One of :data:`VERDICTS` for a model: ``over-corrected`` (counterfactual ΔTPR below -0.10),
    ``kept`` (above 0.10), ``finding lost`` (bias-free AUC more than ``max_bias_free_loss`` below
    ERM's), else ``removed``; ``n/a`` where a number is missing (no counterfactual pairs)."""
    values = (cf_delta_tpr, bias_free_auc, erm_bias_free_auc)
    if any(v is None or v != v for v in values):
        return "n/a"
    if cf_delta_tpr < -MAX_CF_DELTA_TPR:
        return "over-corrected"
    if cf_delta_tpr > MAX_CF_DELTA_TPR:
        return "kept"
    if bias_free_auc < erm_bias_free_auc - max_bias_free_loss:
        return "finding lost"
    return "removed"


def _auc(metrics: Mapping[str, Mapping], test_set: str) -> float | None:
    return metrics.get(test_set, {}).get("auc")


def acceptance(metrics: Mapping[str, Mapping[str, Mapping]]) -> dict | None:
    """The paper's claims for one scenario from ``{method: {test set: metrics}}``: does ERM learn the
    shortcut (its gap to the reference, its ΔTPR), and how much of it do the teacher and the student
    close, scored honestly (:func:`shortcut_verdict`)? None without ERM and the reference, or
    without a bias-inverted test set for them (data whose test sets lack a group)."""
    if not {"erm", "reference"} <= set(metrics):
        return None
    erm_auc, ref_auc = _auc(metrics["erm"], "bias_inverted"), _auc(metrics["reference"], "bias_inverted")
    if erm_auc is None or ref_auc is None:
        return None
    entry = {
        "erm_bias_inverted_auc": erm_auc,
        "reference_bias_inverted_auc": ref_auc,
        "erm_gap": ref_auc - erm_auc,
        "erm_delta_tpr": metrics["erm"].get("in_distribution", {}).get("delta_tpr"),
        "erm_delta_tpr_counterfactual": counterfactual_delta_tpr(metrics["erm"]),
    }
    erm_free = _auc(metrics["erm"], "bias_free")
    entry["erm_bias_free_auc"] = erm_free
    for method in ("teacher", "distilled"):
        if method not in metrics:
            continue
        model = metrics[method]
        auc, cf = _auc(model, "bias_inverted"), counterfactual_delta_tpr(model)
        entry.update({
            f"{method}_bias_inverted_auc": auc,
            f"{method}_bias_free_auc": _auc(model, "bias_free"),
            f"{method}_gap_closed": None if auc is None else gap_closed(erm_auc, ref_auc, auc),
            f"{method}_delta_tpr": model.get("in_distribution", {}).get("delta_tpr"),
            f"{method}_delta_tpr_counterfactual": cf,
            f"{method}_flip_rate": model.get("cf_with", {}).get("flip_rate"),
            f"{method}_verdict": shortcut_verdict(cf, _auc(model, "bias_free"), erm_free),
        })  # fmt: skip
    if "distilled_gap_closed" in entry:
        entry["gap_closed"] = entry["distilled_gap_closed"]
    return entry

