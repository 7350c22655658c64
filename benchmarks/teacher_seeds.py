"""Teacher-seed spread of the distilled student, scored honestly.

For each run of a runs file (a scenario and the experiment settings to test), one experiment trains
the source model, ERM, the reference, the teacher and the student with seed 0 under ``<output>/<run>``
(the default run's core); then, per further teacher seed ``s``, a teacher is trained with seed ``s``
from that same source model and a student (seed ``s``) is distilled from it
(``<scenario>/teacher_seed<s>_teacher`` and ``..._distilled``, with the settings they ran with in
``settings.json``). One table row per (run, teacher seed) is written as soon as it is measured;
``--resume`` reuses finished trainings whose settings are unchanged and the rows of ``--table``, so
an interrupted study continues where it stopped. A run with ``teachers_from: <run>`` trains only
students, from that run's teachers, ERM and reference (student settings compared on the same
teachers, e.g. the cross-entropy weight).

    python -m benchmarks.teacher_seeds --runs benchmarks/configs/teacher_seeds.yaml \\
        --output runs/teacher_seeds --table benchmarks/results/teacher_seeds.csv --resume

The verdict is :func:`pipeline.evaluation.protocol.shortcut_verdict` ("removed" only with
|counterfactual ΔTPR| <= 0.10 and the bias-free AUC at most 0.02 below ERM's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import yaml

from benchmarks.seed_runs import _metrics
from pipeline.atomic import atomic_path, write_text
from pipeline.bundles import config_files, run_bundle, with_fingerprint
from pipeline.evaluation.protocol import acceptance
from pipeline.experiment import ExperimentConfig, run_experiment, run_settings

BASE_METHODS = ["source", "erm", "reference"]
RUN_KEYS = {"scenario", "teacher_seeds", "settings", "method_settings", "teachers_from"}
COLUMNS = [
    "run", "scenario", "network", "teacher_seed",
    "erm_bias_inverted_auc", "reference_bias_inverted_auc", "teacher_bias_inverted_auc", "distilled_bias_inverted_auc",
    "erm_bias_free_auc", "teacher_bias_free_auc", "distilled_bias_free_auc",
    "teacher_cf_delta_tpr", "distilled_cf_delta_tpr", "teacher_flip_rate", "distilled_flip_rate",
    "gap_closed", "teacher_verdict", "verdict", "seconds", "threads", "machine",
]  # fmt: skip


def load_runs(path: str | Path) -> dict[str, dict]:
    """The runs file: ``name -> {scenario, teacher_seeds, settings?, method_settings?}``.

    Raises:
        ValueError: a run without scenario or teacher seeds, or with an unknown key.
    """
    runs = yaml.safe_load(Path(path).read_text()) or {}
    for name, run in runs.items():
        if not isinstance(run, dict) or not {"scenario", "teacher_seeds"} <= set(run):
            raise ValueError(f"{path}: run '{name}' needs 'scenario' and 'teacher_seeds', got {run!r}")
        unknown = sorted(set(run) - RUN_KEYS)
        if unknown:
            raise ValueError(f"{path}: run '{name}' has unknown key(s) {unknown}; allowed: {sorted(RUN_KEYS)}")
        source = run.get("teachers_from")
        if source is not None and (source not in runs or runs[source]["scenario"] != run["scenario"]):
            raise ValueError(f"{path}: run '{name}': teachers_from '{source}' is not a run of scenario {run['scenario']}")
    return runs


def train_student(config: ExperimentConfig, teacher_root: Path, seed: int, resume: bool) -> dict[str, dict]:
    """Metrics of the teacher of ``seed`` in another run's folder ``teacher_root`` and of a student
    (``seed``, this run's settings) distilled from it into this run's folder.

    Raises:
        FileNotFoundError: that teacher was not trained and evaluated yet.
    """
    scenario = config.scenarios[0]
    teacher = teacher_root / ("teacher" if seed == 0 else f"teacher_seed{seed}_teacher")
    if not (teacher / "eval" / "metrics.json").is_file():
        raise FileNotFoundError(f"{teacher} has no evaluated teacher: run the teachers' run first")
    full = ExperimentConfig(**{**config.__dict__, "methods": [*BASE_METHODS, "teacher", "distilled"]})
    student = {
        **run_settings(full, scenario, "distilled"),
        "progress_bar": False,
        "bundle_name": f"teacher_seed{seed}_distilled",
        "seed": seed,
        "teacher_checkpoint": str(teacher / "models" / "teacher.pt"),
    }
    root = Path(config.output).absolute() / scenario
    return {"teacher": _metrics(teacher), "distilled": _train_and_evaluate("distillation", scenario, root, student, resume)}


def base_config(run: Mapping[str, Any], output: Path, methods: Sequence[str] = BASE_METHODS) -> ExperimentConfig:
    """The experiment of one run (by default the source model, ERM and the reference), no analyses."""
    config = ExperimentConfig(
        output=str(output),
        scenarios=[run["scenario"]],
        methods=list(methods),
        settings={"tensorboard": False, **run.get("settings", {})},
        method_settings=dict(run.get("method_settings", {})),
        layer_analysis=False,
        saliency=False,
    )
    config.validate()
    return config


def _train_and_evaluate(bundle: str, scenario: str, root: Path, settings: Mapping[str, Any], resume: bool) -> dict:
    """Train and evaluate one bundle run into ``root/<bundle_name>``, unless ``resume`` finds it
    evaluated with the same settings and bundle configs (``settings.json`` beside it, with the
    merged config's fingerprint: a changed default retrains); returns its metrics."""
    folder = root / settings["bundle_name"]
    if is_done(bundle, scenario, root, settings) and resume:
        return _metrics(folder)
    done = folder / "settings.json"
    done.unlink(missing_ok=True)
    for workflow in ("train", "evaluate"):
        run_bundle(bundle, workflow, scenario, settings=dict(settings), log_config=False)
    write_text(run_record(bundle, scenario, settings), done)
    return _metrics(folder)


def run_record(bundle: str, scenario: str, settings: Mapping[str, Any]) -> str:
    """What ``settings.json`` holds for a run: its settings and its merged train config's fingerprint."""
    fingerprint = with_fingerprint(config_files(bundle, "train", scenario), settings)["config_fingerprint"]
    return json.dumps({**settings, "config_fingerprint": fingerprint}, sort_keys=True, default=str)


def is_done(bundle: str, scenario: str, root: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``root/<bundle_name>`` was trained and evaluated with these settings and configs."""
    folder = root / settings["bundle_name"]
    done = folder / "settings.json"
    return (folder / "eval" / "metrics.json").is_file() and done.is_file() and (
        done.read_text() == run_record(bundle, scenario, settings)
    )


def train_teacher_and_student(config: ExperimentConfig, seed: int, resume: bool) -> dict[str, dict]:
    """Metrics of the teacher trained with ``seed`` from the run's source model, and of the student
    (``seed``) distilled from it; the settings are the experiment's own for those methods."""
    scenario = config.scenarios[0]
    root = Path(config.output).absolute() / scenario
    prefix = f"teacher_seed{seed}_"
    full = ExperimentConfig(**{**config.__dict__, "methods": [*BASE_METHODS, "teacher", "distilled"]})
    quiet = {"progress_bar": False}
    teacher = {**run_settings(full, scenario, "teacher"), **quiet, "bundle_name": prefix + "teacher", "seed": seed}
    student = {
        **run_settings(full, scenario, "distilled"),
        **quiet,
        "bundle_name": prefix + "distilled",
        "seed": seed,
        "teacher_checkpoint": str(root / (prefix + "teacher") / "models" / "teacher.pt"),
    }
    return {
        "teacher": _train_and_evaluate("teacher", scenario, root, teacher, resume),
        "distilled": _train_and_evaluate("distillation", scenario, root, student, resume),
    }


def table_row(name: str, config: ExperimentConfig, seed: int, metrics: Mapping[str, dict], seconds: float) -> dict:
    """One row of the table from ``{erm, reference, teacher, distilled}`` metrics."""
    claims = acceptance(metrics) or {}
    return {
        "run": name,
        "scenario": config.scenarios[0],
        "network": config.settings.get("network_name", "small_cnn"),
        "teacher_seed": seed,
        **{f"{m}_bias_inverted_auc": claims.get(f"{m}_bias_inverted_auc") for m in ("erm", "reference", "teacher", "distilled")},
        **{f"{m}_bias_free_auc": claims.get(f"{m}_bias_free_auc") for m in ("erm", "teacher", "distilled")},
        **{f"{m}_cf_delta_tpr": claims.get(f"{m}_delta_tpr_counterfactual") for m in ("teacher", "distilled")},
        **{f"{m}_flip_rate": claims.get(f"{m}_flip_rate") for m in ("teacher", "distilled")},
        "gap_closed": claims.get("distilled_gap_closed"),
        "teacher_verdict": claims.get("teacher_verdict"),
        "verdict": claims.get("distilled_verdict"),
        "seconds": round(seconds),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
    }  # fmt: skip


def write_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """The rows as CSV (atomically), in the order of :data:`COLUMNS`, 4 decimals; rows of other
    (run, teacher seed) pairs already in the file are kept, so studies of different runs can write
    the same table."""
    table = pd.DataFrame(list(rows), columns=COLUMNS)
    if Path(path).is_file():
        old = pd.read_csv(path)
        ours = set(zip(table["run"], table["teacher_seed"].astype(int)))
        keep = [(run, int(seed)) not in ours for run, seed in zip(old["run"], old["teacher_seed"])]
        table = pd.concat([old[keep], table], ignore_index=True) if any(keep) else table
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


def spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: gap closed mean, lowest, highest, max - min, and how many teachers' students removed
    the shortcut (the issue's stability check)."""
    groups = table.groupby("run", sort=False)
    return pd.DataFrame({
        "teachers": groups.size(),
        "gap_closed_mean": groups["gap_closed"].mean(),
        "gap_closed_min": groups["gap_closed"].min(),
        "gap_closed_max": groups["gap_closed"].max(),
        "gap_closed_spread": groups["gap_closed"].max() - groups["gap_closed"].min(),
        "removed": groups["verdict"].apply(lambda v: int((v == "removed").sum())),
    })  # fmt: skip


def markdown(table: pd.DataFrame) -> str:
    """The table as the README shows it: one line per (run, teacher seed), then each run's spread."""
    lines = [
        "| run | teacher seed | teacher bias-free | teacher cf ΔTPR | student bias-inverted | gap closed "
        "| student cf ΔTPR | student bias-free (ERM) | student flip rate | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {run: index for index, run in enumerate(dict.fromkeys(table["run"]))}
    table = table.sort_values(["run", "teacher_seed"], key=lambda c: c.map(order) if c.name == "run" else c)
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.run} | {r.teacher_seed} | {r.teacher_bias_free_auc:.3f} | {r.teacher_cf_delta_tpr:.2f} | "
            f"{r.distilled_bias_inverted_auc:.3f} | {r.gap_closed:.0%} | {r.distilled_cf_delta_tpr:.3f} | "
            f"{r.distilled_bias_free_auc:.3f} ({r.erm_bias_free_auc:.3f}) | {r.distilled_flip_rate:.2f} | {r.verdict} |"
        )
    summary = spread(table)
    lines += ["", "| run | teachers | gap closed: mean, lowest - highest (spread) | removed |", "| --- | --- | --- | --- |"]
    for run, r in summary.iterrows():
        lines.append(
            f"| {run} | {int(r.teachers)} | {r.gap_closed_mean:.0%}, {r.gap_closed_min:.0%} - {r.gap_closed_max:.0%} "
            f"({r.gap_closed_spread:.2f}) | {int(r.removed)} of {int(r.teachers)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="benchmarks/configs/teacher_seeds.yaml", help="runs file (YAML)")
    parser.add_argument("--output", default="runs/teacher_seeds", help="folder of the runs' experiments")
    parser.add_argument("--table", default="benchmarks/results/teacher_seeds.csv", help="CSV to write")
    parser.add_argument("--only", nargs="+", help="run only these runs of the file")
    parser.add_argument("--resume", action="store_true", help="reuse finished trainings and rows of --table")
    parser.add_argument("--markdown", action="store_true", help="only print --table as the README's tables")
    args = parser.parse_args(argv)
    if args.markdown:
        table = pd.read_csv(args.table)
        print(markdown(table[table["run"].isin(args.only)] if args.only else table))
        return 0
    runs = load_runs(args.runs)
    unknown = sorted(set(args.only or []) - set(runs))
    if unknown:
        parser.error(f"--only: no run(s) {unknown} in {args.runs}; runs: {list(runs)}")
    old = pd.read_csv(args.table) if args.resume and Path(args.table).is_file() else pd.DataFrame(columns=COLUMNS)
    rows = {(r["run"], int(r["teacher_seed"])): r for r in old.to_dict("records")}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        output = Path(args.output) / name
        config = base_config(run, output)
        root = Path(config.output).absolute() / run["scenario"]
        teacher_root = None
        if run.get("teachers_from"):
            teacher_root = Path(args.output).absolute() / run["teachers_from"] / run["scenario"]
        else:
            run_experiment(config, resume=args.resume)
        base = {m: _metrics((teacher_root or root) / m) for m in ("erm", "reference")}
        for seed in run["teacher_seeds"]:
            if args.resume and (name, seed) in rows:
                continue
            start = time.perf_counter()
            if teacher_root is not None:
                models = train_student(config, teacher_root, seed, args.resume)
            elif seed == 0:  # the default run's own teacher and student: the experiment adds them
                run_experiment(base_config(run, output, [*BASE_METHODS, "teacher", "distilled"]), resume=True)
                models = {m: _metrics(root / m) for m in ("teacher", "distilled")}
            else:
                models = train_teacher_and_student(config, seed, args.resume)
            rows[(name, seed)] = table_row(name, config, seed, {**base, **models}, time.perf_counter() - start)
            write_table(rows.values(), args.table)
            row = rows[(name, seed)]
            print(f"{name} teacher seed {seed}: gap closed {row['gap_closed']:.0%}, "
                  f"cf ΔTPR {row['distilled_cf_delta_tpr']:.2f}, bias-free {row['distilled_bias_free_auc']:.3f} "
                  f"(ERM {row['erm_bias_free_auc']:.3f}): {row['verdict']}", flush=True)  # fmt: skip
    table = pd.DataFrame(list(rows.values()), columns=COLUMNS)
    print(spread(table).to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
