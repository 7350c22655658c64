"""Run whole experiments (every method, evaluation, layer analysis, saliency, report) one after the
other, timed, and write the table and the results page from their reports.

Each run is an experiment config (a name in bundles/common/experiments or a path) with optional
overrides, in its own output folder, so a run's time is its own. A run is resumable: an
interrupted one continues (``pipeline.experiment --resume``), a finished one is skipped when its
row is in the table. With ``--resume``, a method that another run under ``--output`` finished with
the same fingerprint (the same settings, data and upstream models: an ERM and a reference that two
rows share) is copied instead of trained again (:mod:`pipeline.experiment.reuse`); the row's
``reused`` column names what came from where, and ``whole_run_timed`` is then false.

    python -m benchmarks.scenario_runs --runs benchmarks/configs/scenario_runs.yaml \
        --output runs/scenarios --table benchmarks/results/scenario_runs.csv --page docs/results.md --resume
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import yaml

from benchmarks.scenario_validity import append_row
from pipeline.atomic import atomic_path, write_text
from pipeline.evaluation.protocol import shortcut_verdict
from pipeline.experiment import ExperimentConfig, run_experiment
from pipeline.experiment.reuse import reuse_trainings

CORE = ("erm", "reference", "teacher", "distilled")
# methods that know nothing of the artifact (the student must beat them)
ARTIFACT_AGNOSTIC = ("augmentation", "jtt")
# every baseline that does not know the artifact exactly: also those given bias labels (group
# methods) or the clean teacher subset (DFR, ERM with the clean images); random_artifact adds the known artifact itself
WITHOUT_ARTIFACT = (*ARTIFACT_AGNOSTIC, "dfr", "group_balanced", "group_reweight", "group_dro", "clean_images")
# baselines whose own columns a row gains when the run trains them (the controls of a student setting)
REPORTED_BASELINES = ("clean_images",)


def load_runs(path: str | Path) -> dict[str, dict]:
    """``{run name: {config, scenarios, methods, settings, method_settings}}`` from a YAML file.

    Raises:
        ValueError: a missing file or a run that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"runs file '{path}' does not exist")
    runs = yaml.safe_load(path.read_text()) or {}
    bad = [name for name, run in runs.items() if not isinstance(run, dict)]
    if bad:
        raise ValueError(f"runs file '{path}': run(s) {bad} must be mappings of experiment settings")
    return runs


def experiment_config(run: Mapping[str, Any], output: Path) -> ExperimentConfig:
    """The experiment config of one run: its ``config`` file with the run's other keys on top."""
    config = ExperimentConfig.load(run.get("config", "default.yaml"))
    for key, value in run.items():
        if key == "config":
            continue
        if key not in ExperimentConfig.__dataclass_fields__:
            raise ValueError(f"run key '{key}' is not an experiment setting; allowed: {sorted(ExperimentConfig.__dataclass_fields__)}")
        current = getattr(config, key)
        setattr(config, key, {**current, **value} if isinstance(current, dict) else value)
    config.output = str(output)
    config.validate()
    return config


# a run measures shortcut reliance when ERM falls this far below the reference (bias-inverted AUC)
# and the reference, which never saw the artifact, stays this close to its own bias-free AUC
MIN_ERM_GAP = 0.2
MAX_REFERENCE_FOOLED = 0.1


def measures_shortcut(erm: float, reference: float, reference_bias_free: float) -> bool:
    """Whether a run's gap closed means anything: ERM learnt the shortcut and the reference was not fooled."""
    return bool(reference - erm >= MIN_ERM_GAP and reference_bias_free - reference <= MAX_REFERENCE_FOOLED)


def summary_rows(name: str, config: ExperimentConfig, seconds: float) -> list[dict[str, Any]]:
    """One table row per scenario of a finished run: timing, core AUCs, gap closed, counterfactual ΔTPR."""
    report = Path(config.output) / "report"
    results = pd.read_csv(report / "results.csv")
    acceptance = json.loads((report / "acceptance.json").read_text())
    rows = []
    for scenario in config.scenarios:
        part = results[results["scenario"] == scenario].set_index(["method", "test_set"])

        def auc(method: str, test_set: str = "bias_inverted", part=part) -> float:
            return float(part.loc[(method, test_set), "auc"]) if (method, test_set) in part.index else float("nan")

        claims = acceptance.get(scenario, {})
        agnostic = [auc(m) for m in ARTIFACT_AGNOSTIC if (m, "bias_inverted") in part.index]
        without = [auc(m) for m in WITHOUT_ARTIFACT if (m, "bias_inverted") in part.index]
        rows.append({
            "run": name, "scenario": scenario, "seconds": round(seconds), "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "seed": int(config.settings.get("seed", 0)),
            **{f"{m}_bias_inverted_auc": auc(m) for m in CORE},
            "reference_bias_free_auc": auc("reference", "bias_free"),
            "reference_ood_auc": auc("reference", "ood"),
            "best_agnostic_baseline_auc": max(agnostic) if agnostic else float("nan"),
            "measures_shortcut": measures_shortcut(auc("erm"), auc("reference"), auc("reference", "bias_free")),
            "gap_closed": claims.get("gap_closed"),
            "erm_cf_delta_tpr": claims.get("erm_delta_tpr_counterfactual"),
            "distilled_cf_delta_tpr": claims.get("distilled_delta_tpr_counterfactual"),
            "best_baseline_without_artifact_auc": max(without) if without else float("nan"),
            **{f"{m}_bias_free_auc": auc(m, "bias_free") for m in ("erm", "teacher", "distilled")},
            "teacher_cf_delta_tpr": claims.get("teacher_delta_tpr_counterfactual"),
            "teacher_flip_rate": claims.get("teacher_flip_rate"),
            "distilled_flip_rate": claims.get("distilled_flip_rate"),
            "teacher_verdict": claims.get("teacher_verdict"),
            "verdict": claims.get("distilled_verdict"),
            **{column: value for m in REPORTED_BASELINES if m in config.methods
               for column, value in baseline_columns(part, m).items()},
        })  # fmt: skip
    return rows


def baseline_columns(part: pd.DataFrame, method: str) -> dict[str, float]:
    """``<method>_bias_inverted_auc``, ``_bias_free_auc`` and ``_cf_delta_tpr`` (TPR with the artifact
    minus without on the same positives, as the protocol's) from one scenario's results indexed by
    (method, test set)."""

    def value(test_set: str, column: str) -> float:
        return float(part.loc[(method, test_set), column]) if (method, test_set) in part.index else float("nan")

    return {
        f"{method}_bias_inverted_auc": value("bias_inverted", "auc"),
        f"{method}_bias_free_auc": value("bias_free", "auc"),
        f"{method}_cf_delta_tpr": value("cf_with", "tpr_bias1") - value("cf_without", "tpr_bias0"),
    }


def markdown_table(table: pd.DataFrame) -> list[str]:
    """``table`` as markdown lines (floats with 3 decimals, missing values as n/a)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "n/a" if pd.isna(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]


# where the shortcut lives, per stage: counterfactual KL and the share of bias-carrying samples
# whose prediction is decided by each stage (prediction depth)
LAYER_METRICS = ("counterfactual_kl", "decided_bias1", "probe_auc_bias")
LAYER_TITLES = {
    "counterfactual_kl": "Counterfactual KL per stage (how much adding the artifact moves the stage's class probe)",
    "decided_bias1": "Prediction depth: share of artifact-carrying test images decided by each stage (cumulative)",
    "probe_auc_bias": "Bias-probe AUC per stage (how linearly decodable the artifact is)",
}


def layer_tables(table: pd.DataFrame, output: Path) -> dict[str, pd.DataFrame]:
    """The layer analysis (``layers.csv``) of each run that has one, by run label."""
    from pipeline.evaluation.layer_figures import LAYERS_CSV

    tables = {}
    for row in table.itertuples(index=False):
        path = output / row.run / "report" / "layers" / row.scenario / LAYERS_CSV
        if path.is_file():
            tables[f"{row.scenario} ({row.run})" if row.run != row.scenario else row.scenario] = pd.read_csv(path)
    return tables


def layer_figure(tables: Mapping[str, pd.DataFrame], out_png: Path) -> Path | None:
    """The runs' layer analyses (:func:`layer_tables`) side by side, one column per scenario
    (None with fewer than two)."""
    from pipeline.evaluation.layer_figures import plot_layer_curves

    return plot_layer_curves(tables, out_png, metrics=LAYER_METRICS) if len(tables) >= 2 else None


def stage_table(tables: Mapping[str, pd.DataFrame], metric: str, models: Sequence[str] = ("erm", "reference", "distilled")) -> pd.DataFrame:
    """``metric`` per stage (columns: stage 1, 2, ...) for each run and model (rows)."""
    rows = []
    for label, layers in tables.items():
        part = layers[layers["metric"] == metric]
        for model in models:
            curve = part[part["model"] == model].sort_values("stage_index")
            if not curve.empty:
                rows.append({"run": label, "model": model,
                             **{f"stage {i + 1}": v for i, v in enumerate(curve["value"])}})  # fmt: skip
    return pd.DataFrame(rows)


def in_runs_order(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``table``'s rows in the runs file's order (localized beside diffuse, 2D before 3D); others last."""
    rank = {name: i for i, name in enumerate(names)}
    order = sorted(range(len(table)), key=lambda i: (rank.get(table["run"].iloc[i], len(rank)), i))
    return table.iloc[order].reset_index(drop=True)


def write_page(table: pd.DataFrame, output: Path, page: Path) -> None:
    """The results page: the runs table, the layer figure, then each run's headline table."""
    lines = [
        "# Results of the runs",
        "",
        "Generated by `python -m benchmarks.scenario_runs` from the runs' reports; every number is in",
        "the run's `report/results.md` with its 95% CI. Bias-inverted AUC unless said otherwise;",
        "gap closed = (student - ERM) / (reference - ERM) on it, meaningful only where",
        f"measures_shortcut is true (ERM at least {MIN_ERM_GAP} below the reference, the reference within",
        f"{MAX_REFERENCE_FOOLED} of its bias-free AUC).",
        "",
        *markdown_table(table),
        "",
    ]
    tables = layer_tables(table, output)
    figure = layer_figure(tables, page.parent / "figures" / f"{page.stem}_layers.png")
    if figure is not None:
        lines += ["## Where the shortcut lives", "", f"![layer curves](figures/{figure.name})", ""]
        for metric, title in LAYER_TITLES.items():
            lines += [f"{title}:", "", *markdown_table(stage_table(tables, metric)), ""]
    for name in dict.fromkeys(table["run"]):
        headline = output / name / "report" / "headline.md"
        if headline.is_file():
            lines += [f"## {name}", "", headline.read_text().strip(), ""]
    write_text("\n".join(lines), page)


def page_headlines(page: str | Path) -> dict[str, dict[str, dict[str, str]]]:
    """The per-run headline tables of a results page (:func:`write_page`): run -> method -> column
    -> cell text."""
    headlines: dict[str, dict[str, dict[str, str]]] = {}
    run, header = None, None
    for line in Path(page).read_text().splitlines():
        if line.startswith("## "):
            run, header = line[3:].strip(), None
        elif run is not None and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "method":
                header = cells
            elif header is not None and cells[0] != "---":
                headlines.setdefault(run, {})[cells[0]] = dict(zip(header, cells))
    return headlines


SCORE_COLUMNS = ("erm_bias_free_auc", "teacher_bias_free_auc", "distilled_bias_free_auc", "teacher_cf_delta_tpr",
                 "teacher_flip_rate", "distilled_flip_rate", "teacher_verdict", "verdict")  # fmt: skip


def rescore(table: pd.DataFrame, headlines: Mapping[str, Mapping[str, Mapping[str, str]]]) -> pd.DataFrame:
    """Fill the honest-scoring columns of rows measured before they existed from the runs' headline
    tables (as printed: AUCs to 3 decimals, ΔTPR and flip rates to 2); rows that have them stay."""
    table = table.copy()
    for column in SCORE_COLUMNS:
        if column not in table:
            table[column] = None
    table[list(SCORE_COLUMNS)] = table[list(SCORE_COLUMNS)].astype(object)

    def number(run: str, method: str, column: str) -> float:
        cell = headlines.get(run, {}).get(method, {}).get(column, "n/a")
        return float("nan") if cell in ("n/a", "") else float(cell)

    for index, row in table.iterrows():
        if not pd.isna(row["erm_bias_free_auc"]) or row["run"] not in headlines:
            continue
        run = row["run"]
        free = {m: number(run, m, "bias-free AUC") for m in ("erm", "teacher", "distilled")}
        cf = {m: number(run, m, "ΔTPR (counterfactual)") for m in ("teacher", "distilled")}
        table.loc[index, "erm_bias_free_auc"] = free["erm"]
        table.loc[index, "teacher_bias_free_auc"] = free["teacher"]
        table.loc[index, "distilled_bias_free_auc"] = free["distilled"]
        table.loc[index, "teacher_cf_delta_tpr"] = cf["teacher"]
        table.loc[index, "teacher_flip_rate"] = number(run, "teacher", "flip rate")
        table.loc[index, "distilled_flip_rate"] = number(run, "distilled", "flip rate")
        table.loc[index, "teacher_verdict"] = shortcut_verdict(cf["teacher"], free["teacher"], free["erm"])
        table.loc[index, "verdict"] = shortcut_verdict(cf["distilled"], free["distilled"], free["erm"])
    return table


def replace_rows(table: Path, run: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` in place of the ``run``'s rows of the CSV ``table`` (where the first of them stood),
    else appended; written whole to a temporary file, then renamed."""
    if not table.is_file():
        for row in rows:
            append_row(table, row)
        return
    old = pd.read_csv(table)
    at = old.index[old["run"] == run]
    new = pd.DataFrame(list(rows))
    if len(at):
        kept = old[old["run"] != run]
        before = kept[kept.index < at[0]]
        new = pd.concat([before, new, kept[kept.index > at[0]]], ignore_index=True)
    else:
        new = pd.concat([old, new], ignore_index=True)
    with atomic_path(table) as tmp:
        new.to_csv(tmp, index=False, float_format="%.4f")


def reused_note(reused: dict[str, str], scenario: str) -> str:
    """``"erm, reference <- resnet18_localized2d"``: the methods of ``scenario`` copied from other runs."""
    by_source: dict[str, list[str]] = {}
    for key, source in reused.items():
        part, method = key.split("/")
        if part == scenario:
            by_source.setdefault(Path(source).name, []).append(method)
    return "; ".join(f"{', '.join(methods)} <- {source}" for source, methods in by_source.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario_runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="benchmarks/configs/scenario_runs.yaml", help="YAML: run name -> experiment settings")
    parser.add_argument("--only", nargs="+", help="run only these names of the runs file")
    parser.add_argument("--output", default="runs/scenarios", help="one experiment folder per run under it")
    parser.add_argument("--table", default="benchmarks/results/scenario_runs.csv")
    parser.add_argument("--page", help="results page to write from the table and the reports (markdown)")
    parser.add_argument("--resume", action="store_true", help="skip runs in the table, continue interrupted ones")
    parser.add_argument(
        "--rerun", nargs="+", default=[], metavar="RUN",
        help="with --resume: run these again although in the table (unchanged trainings are reused), "
        "their rows replaced in place once the run has finished",
    )  # fmt: skip
    parser.add_argument(
        "--rescore-from-page", metavar="PAGE",
        help="only fill the scoring columns of the table's older rows from PAGE's headline tables, then exit",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rescore_from_page:
        rescored = rescore(pd.read_csv(args.table), page_headlines(args.rescore_from_page))
        with atomic_path(args.table) as tmp:
            rescored.to_csv(tmp, index=False, float_format="%.4f")
        return 0
    try:
        runs = load_runs(args.runs)
        unknown = sorted(set(args.only or ()) - set(runs))
        if unknown:
            raise ValueError(f"--only: unknown run(s) {unknown}; runs: {list(runs)}")
        configs = {n: experiment_config(r, Path(args.output).absolute() / n) for n, r in runs.items() if not args.only or n in args.only}
    except ValueError as err:
        parser.error(str(err))
    table = Path(args.table)
    done = set(pd.read_csv(table)["run"]) - set(args.rerun) if args.resume and table.is_file() else set()
    if not args.resume and table.is_file():
        table.unlink()
    for name, config in configs.items():
        if name in done:
            print(f"{name}: in the table, skipped", flush=True)
            continue
        started = time.monotonic()
        partly_done = Path(config.output).is_dir() and any(Path(config.output).iterdir())
        # trainings another run of this output folder finished with the same fingerprint are copied, not rerun
        reused = reuse_trainings(config, sorted(Path(args.output).absolute().glob("*/"))) if args.resume else {}
        for method, source in reused.items():
            print(f"{name}: {method} reused from {Path(source).name}", flush=True)
        run_experiment(config, resume=args.resume)
        rows = [
            {**row, "whole_run_timed": not partly_done and not reused, "reused": reused_note(reused, row["scenario"])}
            for row in summary_rows(name, config, time.monotonic() - started)
        ]
        replace_rows(table, name, rows)
        print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)
    if args.page and table.is_file():
        write_page(in_runs_order(pd.read_csv(table), list(runs)), Path(args.output).absolute(), Path(args.page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
