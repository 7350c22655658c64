"""The experiment's report: gathers what the bundle workflows wrote (results, analyses) into
results.csv/md, the headline table, the acceptance summary and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_csv, write_json, write_text
from pipeline.engine.datalist import load_role
from pipeline.evaluation.bias_types import item_types, results_by_bias_type
from pipeline.evaluation.headline import write_headline
from pipeline.evaluation.layer_figures import combine_layer_outputs, compare_scenarios
from pipeline.evaluation.prediction_file import load_predictions, prediction_file_name
from pipeline.evaluation.protocol import METRICS_JSON, TEST_SETS_JSON, acceptance, read_results
from pipeline.evaluation.report import load_results, write_results
from pipeline.evaluation.saliency import saliency_grid_from_files
from pipeline.experiment.catalogue import ANALYSED_METHODS, METHOD_NEEDS
from pipeline.experiment.config import ExperimentConfig, ordered_methods


def evaluation_results(config: ExperimentConfig, output: Path) -> list[dict]:
    """The result rows (scenario, method + :data:`pipeline.evaluation.protocol.RESULT_COLUMNS`) every
    method's evaluate workflow wrote, gathered for the report."""

    return [
        {"scenario": scenario, "method": method, **row}
        for scenario in config.scenarios
        for method in ordered_methods(config.methods)
        if (output / scenario / method / "eval").is_dir()
        for row in read_results(output / scenario / method / "eval")
    ]


def write_report(config: ExperimentConfig, output: Path) -> Path:
    """results.csv/md, figures, acceptance summary (and layer/saliency figures when enabled)."""

    report_dir = output / "report"
    extra = analysis_figures(config, output, report_dir)
    notes = test_set_notes(config, output)
    by_type = bias_type_results(config, output)
    if not by_type.empty:
        write_csv(by_type, report_dir / "results_by_bias_type.csv")
        write_text(bias_type_markdown(by_type), report_dir / "results_by_bias_type.md")
        for scenario in by_type["scenario"].unique():
            notes[scenario] = (notes.get(scenario, "") + " " + BIAS_TYPE_NOTE).strip()
    write_results(evaluation_results(config, output), report_dir, extra_figures=extra, notes=notes)
    write_headline(load_results(report_dir), report_dir, METHOD_NEEDS)
    write_json(acceptance_summary(config, output), report_dir / "acceptance.json")
    return report_dir


def analysis_figures(config: ExperimentConfig, output: Path, report_dir: Path) -> dict[str, Path]:
    """Title -> figure drawn from the analysed methods' ``saliency/`` and ``layers/`` folders: per
    scenario the saliency grid (bias-inverted test images) and the layer curves (with the
    scenario's combined tables in ``report/layers/<scenario>/``), then the scenarios side by side."""

    figures: dict[str, Path] = {}
    methods = [m for m in ordered_methods(config.methods) if m in ANALYSED_METHODS]
    for scenario in config.scenarios:
        folders = {m: output / scenario / m for m in methods}
        if config.saliency:
            path = report_dir / "figures" / f"saliency_{scenario}.png"
            if saliency_grid_from_files({m: f / "saliency" for m, f in folders.items()}, path):
                figures[f"Saliency ({scenario}, bias-inverted test images)"] = path
        if config.layer_analysis:
            curves = combine_layer_outputs({m: f / "layers" for m, f in folders.items()}, report_dir / "layers" / scenario)
            if curves:
                figures[f"Where the shortcut lives ({scenario})"] = curves
    if config.layer_analysis:
        comparison = compare_scenarios(
            {s: report_dir / "layers" / s for s in config.scenarios},
            report_dir / "figures" / "layer_curves_by_scenario.png",
        )
        if comparison is not None:
            figures["Where the shortcut lives, scenarios side by side"] = comparison
    return figures


def test_set_notes(config: ExperimentConfig, output: Path) -> dict[str, str]:
    """Per pre-biased scenario, which test sets its data allowed (from each method's ``eval/test_sets.json``)."""

    notes = {}
    for scenario in config.scenarios:
        paths = [output / scenario / m / "eval" / TEST_SETS_JSON for m in ordered_methods(config.methods)]
        records = [json.loads(p.read_text()) for p in paths if p.is_file()]
        if not any(r["prebiased"] for r in records):
            continue
        evaluated = list(dict.fromkeys(name for r in records for name in r["evaluated"]))
        missing = {
            name: why for r in records for name, why in r["not_possible"].items() if name not in evaluated
        }
        notes[scenario] = (
            "Pre-biased data: the bias is in the images and its flag comes from the datalist (nothing injected); "
            "the test sets are the test role's existing groups (bias_inverted: a seeded resample with the two "
            "classes' bias rates swapped). Evaluated: " + ", ".join(evaluated or ["none"]) + ". Not possible: "
            + ("; ".join(f"{name} ({why})" for name, why in missing.items()) or "none") + "."
        )  # fmt: skip
    return notes


def acceptance_summary(config: ExperimentConfig, output: Path) -> dict[str, dict]:
    """The paper's claims per scenario (:func:`pipeline.evaluation.protocol.acceptance`), from each
    method's ``eval/metrics.json``."""

    summary = {}
    for scenario in config.scenarios:
        metrics = {}
        for method in ordered_methods(config.methods):  # acceptance() picks the methods its claims compare
            path = output / scenario / method / "eval" / METRICS_JSON
            if path.is_file():
                metrics[method] = json.loads(path.read_text())
        entry = acceptance(metrics)
        if entry is not None:
            summary[scenario] = entry
        elif {"erm", "reference"} <= set(metrics):
            summary[scenario] = {"not_scored": _why_not_scored(output / scenario)}
    return summary


BIAS_TYPE_NOTE = "Results per bias type: `results_by_bias_type.md` (and `.csv`)."


def _why_not_scored(folder: Path) -> str:
    """Why ERM and the reference have no bias-inverted AUC (their ``test_sets.json``)."""
    reasons = []
    for method in ("erm", "reference"):
        path = folder / method / "eval" / TEST_SETS_JSON
        why = json.loads(path.read_text())["not_possible"].get("bias_inverted") if path.is_file() else None
        reasons.append(f"{method}: {why or 'no bias_inverted result'}")
    return "no bias-inverted test set, so no gap to score (" + "; ".join(reasons) + ")"


def bias_type_results(config: ExperimentConfig, output: Path) -> pd.DataFrame:
    """Per scenario and method, the in-distribution test results per bias type
    (:func:`pipeline.evaluation.bias_types.results_by_bias_type`) where the run's datalist (its
    ``models/run_settings.json``) names a ``bias_type`` per test item; empty otherwise."""
    frames = []
    for scenario in config.scenarios:
        for method in ordered_methods(config.methods):
            folder = output / scenario / method
            settings = folder / "models" / "run_settings.json"
            predictions = folder / "eval" / prediction_file_name("in_distribution")
            if not (settings.is_file() and predictions.is_file()):
                continue
            datalist = json.loads(settings.read_text()).get("datalist")
            types = item_types(load_role(datalist, "test", check_files=False)) if datalist else {}
            if types:
                table = results_by_bias_type(load_predictions(predictions), types)
                frames.append(table.assign(scenario=scenario, method=method))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[["scenario", "method", *[c for c in table.columns if c not in ("scenario", "method")]]]


def bias_type_markdown(table: pd.DataFrame) -> str:
    """``results_by_bias_type.md``: :func:`bias_type_results` as one markdown table per scenario."""
    lines = ["# Results per bias type", "", "In-distribution test set, split by the items' `bias_type`; "
             "ΔTPR and ΔFPR against the bias-free items (`none`)."]  # fmt: skip
    for scenario, rows in table.groupby("scenario", sort=False):
        lines += ["", f"## Scenario `{scenario}`", "", "| method | bias type | n | AUC | TPR | FPR | ΔTPR | ΔFPR |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in rows.itertuples():
            values = (row.auc, row.tpr, row.fpr, row.delta_tpr, row.delta_fpr)
            cells = [f"{v:.3f}" if pd.notna(v) else "-" for v in values]
            lines.append(f"| {row.method} | {row.bias_type} | {row.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_summary(report_dir: Path) -> str:
    """The AUC of every method on every test set, one table per scenario, from ``results.csv``."""

    results = pd.read_csv(report_dir / "results.csv")
    parts = []
    for scenario, rows in results.groupby("scenario", sort=False):
        table = rows.pivot(index="method", columns="test_set", values="auc")
        table = table.reindex(index=rows["method"].unique(), columns=rows["test_set"].unique())
        table = table.rename_axis(index="method", columns=None).reset_index()
        text = table.to_string(index=False, float_format="{:.3f}".format, na_rep="n/a")
        parts.append(f"AUC by test set, {scenario}:\n{text}")
    return "\n\n".join(parts)
