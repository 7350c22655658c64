"""The end-to-end experiment: every method of a scenario through its bundle, then the report.

Each step is a MONAI bundle workflow (``pipeline.bundles.run_bundle``: ConfigWorkflow over the
bundle's merged configs), so the experiment adds no training loop of its own. Per scenario:
the source model (external labelled data without the artifact; the teacher's starting weights),
ERM, the bias-free reference, the specialist teacher, the distilled student and the mitigation
baselines are trained and evaluated on the same test sets; the bundles' ``layers`` and
``saliency`` workflows analyse erm, reference, teacher and distilled; then the report
(results.csv, results.md, figures, configs, predictions) is written.

    python -m pipeline.experiment                       # bundles/common/experiments/default.yaml
    python -m pipeline.experiment --config matrix.yaml  # 2D/3D x localized/diffuse (GPU)
    python -m pipeline.experiment --methods erm teacher distilled --set max_epochs=2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pipeline.atomic import write_json
from pipeline.bundles import BUNDLES_ROOT, config_files, parse_value, run_bundle, scenario_names
from pipeline.engine.resumable_checkpoint import ResumeError, config_fingerprint, resume_path

EXPERIMENTS = BUNDLES_ROOT / "common" / "experiments"
BASELINE_CONFIGS = BUNDLES_ROOT / "baseline" / "configs"
MITIGATION = BASELINE_CONFIGS / "mitigation"
# the console shows one progress line per method and epoch; the log lines go to LOG_FILE in the
# method's folder (the report's in report/)
CONSOLE_SETTINGS = {"progress_bar": False, "epoch_progress": True}
LOG_FILE = "log.txt"
# the methods whose trained models the bundles' analysis workflows (layer analysis, saliency) read
ANALYSED_METHODS = ("erm", "reference", "teacher", "distilled")
# written into an analysis workflow's output folder once it ran: the fingerprint it ran with
ANALYSIS_DONE = "fingerprint.json"
# written into the output folder: `--fresh` deletes only folders that hold it
MARKER = ".shortcut-kd-experiment"


@dataclass(frozen=True)
class Method:
    """A method = a bundle, its override files, fixed settings, and the methods it needs first.

    ``starts_from``: a method whose trained model becomes this one's ``init_checkpoint`` when
    both are in the experiment (the teacher starts from the source model; without it, from scratch).
    """

    bundle: str
    overrides: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    starts_from: str | None = None


def _mitigation(name: str, needs: tuple[str, ...] = ()) -> Method:
    return Method("baseline", (str(MITIGATION / f"{name}.yaml"),), needs=needs)


METHODS: dict[str, Method] = {
    "source": Method("baseline", (str(BASELINE_CONFIGS / "source.yaml"),)),
    "erm": Method("baseline"),
    "reference": Method("baseline", settings={"train_bias_mode": "never"}),
    "teacher": Method("teacher", starts_from="source"),
    "distilled": Method("distillation", needs=("teacher",)),
    "augmentation": _mitigation("augmentation"),
    "random_artifact": _mitigation("random_artifact"),
    "group_balanced": _mitigation("group_balanced"),
    "group_reweight": _mitigation("group_reweight"),
    "group_dro": _mitigation("group_dro"),
    "jtt": _mitigation("jtt", needs=("erm",)),
    "dfr": _mitigation("dfr", needs=("erm",)),
}

# what each method needs beyond the biased training set (the headline table's "needs" column)
METHOD_NEEDS = {
    "source": "external labelled data",
    "erm": "-",
    "reference": "artifact-free data",
    "teacher": "the clean teacher subset, the source model",
    "distilled": "the teacher",
    "augmentation": "-",
    "random_artifact": "artifact type",
    "group_balanced": "bias labels",
    "group_reweight": "bias labels",
    "group_dro": "bias labels",
    "jtt": "-",
    "dfr": "the clean teacher subset",
}


@dataclass
class ExperimentConfig:
    output: str = "runs/experiment"
    scenarios: list[str] = field(default_factory=lambda: ["localized2d"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    settings: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict] = field(default_factory=dict)
    layer_analysis: bool = True
    saliency: bool = True

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read an experiment YAML file.

        Raises:
            ValueError: missing file, unknown keys, unknown scenario or method names.
        """
        path = Path(path)
        if not path.is_file() and (EXPERIMENTS / path).is_file():
            path = EXPERIMENTS / path
        if not path.is_file():
            raise ValueError(
                f"experiment config '{path}' does not exist; shipped ones: {sorted(p.name for p in EXPERIMENTS.glob('*.yaml'))}"
            )
        content = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(content) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"experiment config '{path}': unknown key(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        config = cls(**content)
        config.validate()
        return config

    def validate(self) -> None:
        bad = [s for s in self.scenarios if s not in scenario_names()]
        if bad:
            raise ValueError(f"unknown scenario(s) {bad}; scenarios: {scenario_names()}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; methods: {list(METHODS)}")
        for method in self.methods:
            missing = [n for n in METHODS[method].needs if n not in self.methods]
            if missing:
                raise ValueError(f"method '{method}' needs {missing} in the same experiment")


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` in the order of :data:`METHODS`, where each method's needs come first."""
    return [m for m in METHODS if m in methods]


def run_settings(config: ExperimentConfig, scenario: str, method: str) -> dict[str, Any]:
    """Config overrides of one bundle run: shared settings, then the method's, then the user's."""
    root = Path(config.output).absolute() / scenario
    spec = METHODS[method]
    start = {}
    if spec.starts_from in config.methods:
        start = {"init_checkpoint": str(root / spec.starts_from / "models" / "model.pt")}
    return {
        **config.settings,
        "output_root": str(root),
        "bundle_name": method,
        "erm_checkpoint": str(root / "erm" / "models" / "model.pt"),
        "teacher_checkpoint": str(root / "teacher" / "models" / "teacher.pt"),
        **start,
        **spec.settings,
        **config.method_settings.get(method, {}),
    }


def bundle_fingerprints(
    config: ExperimentConfig, scenario: str, method: str, workflows: Sequence[str] = ("train", "evaluate")
) -> dict[str, str]:
    """Config fingerprints of a method's ``workflows``, with the paths inside the output folder
    made relative (a moved or copied experiment keeps them)."""
    spec, settings = METHODS[method], run_settings(config, scenario, method)
    root = str(Path(config.output).absolute())
    settings = {k: v.replace(root, "<output>") if isinstance(v, str) else v for k, v in settings.items()}
    return {
        workflow: config_fingerprint(config_files(spec.bundle, workflow, scenario, spec.overrides), settings)
        for workflow in workflows
    }


def method_fingerprint(config: ExperimentConfig, scenario: str, method: str) -> str:
    """Fingerprint of everything that decides a method's results: its bundles' configs
    (:func:`bundle_fingerprints`) and the fingerprints of the methods it uses."""
    spec = METHODS[method]
    parts = list(bundle_fingerprints(config, scenario, method).values())
    upstream = [*spec.needs, *([spec.starts_from] if spec.starts_from in config.methods else [])]
    parts += [method_fingerprint(config, scenario, m) for m in upstream]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


def analyses(config: ExperimentConfig, method: str) -> list[str]:
    """The analysis workflows (``layers``, ``saliency``) the experiment runs for ``method``."""
    if method not in ANALYSED_METHODS:
        return []
    return [w for w, enabled in (("layers", config.layer_analysis), ("saliency", config.saliency)) if enabled]


def analysis_fingerprint(config: ExperimentConfig, scenario: str, method: str, workflow: str) -> str:
    """Fingerprint of an analysis' results: its workflow's configs and the analysed method's fingerprint."""
    parts = [bundle_fingerprints(config, scenario, method, [workflow])[workflow], method_fingerprint(config, scenario, method)]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


def _resumable_training(models: Path, fingerprint: str) -> bool:
    """True when ``models`` holds a per-epoch checkpoint of a training with ``fingerprint``."""
    try:
        resume_path(models, fingerprint)
    except (ResumeError, ValueError):
        return False
    return True


def run_experiment(config: ExperimentConfig, resume: bool = False) -> Path:
    """Train and evaluate every method of every scenario, then write the report; returns its folder.

    ``resume``: skip a method whose results were computed with the same settings (its
    fingerprint, saved beside them), continue an interrupted training from its last epoch, and
    rerun a method whose settings changed.
    """
    config.validate()
    output = Path(config.output).absolute()
    mark_output(output)
    steps = [(s, m) for s in config.scenarios for m in ordered_methods(config.methods)]
    started = time.monotonic()
    for index, (scenario, method) in enumerate(steps, 1):
        prefix = f"[{index}/{len(steps)}] {scenario} {method} ({METHODS[method].bundle})"
        _train_and_evaluate(config, output, scenario, method, prefix, resume, started)
        for workflow in analyses(config, method):
            _analyse(config, output, scenario, method, workflow, prefix, resume, started)
    _progress("report", started)
    with _logged(output / "report" / LOG_FILE, "report", "w"):
        report_dir = write_report(config, output)
    _progress(f"finished: {report_dir / 'results.md'}", started)
    return report_dir


def _saved_fingerprint(path: Path) -> str | None:
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


def _train_and_evaluate(
    config: ExperimentConfig, output: Path, scenario: str, method: str, prefix: str, resume: bool, started: float
) -> None:
    """A method's train and evaluate workflows; with ``resume``, skipped when done with the same settings."""
    spec, settings = METHODS[method], run_settings(config, scenario, method)
    settings["config_fingerprint"] = bundle_fingerprints(config, scenario, method)["train"]
    done = output / scenario / method / "eval" / "metrics.json"
    fingerprint_file = done.with_name("fingerprint.json")
    fingerprint = method_fingerprint(config, scenario, method)
    if resume and done.is_file():
        if _saved_fingerprint(fingerprint_file) == fingerprint:
            _progress(f"{prefix}: done before, skipped", started)
            return
        _progress(f"{prefix}: its settings (or a method it uses) changed since it ran: rerun", started)
    elif resume and _resumable_training(output / scenario / method / "models", settings["config_fingerprint"]):
        _progress(f"{prefix}: continuing its interrupted training", started)
        settings = {**settings, "resume": True}
    for workflow in ("train", "evaluate"):
        _progress(f"{prefix}: {workflow}", started)
        log = output / scenario / method / LOG_FILE
        with _logged(log, f"{prefix}: {workflow}", "w" if workflow == "train" else "a"):
            ran = run_bundle(spec.bundle, workflow, scenario, spec.overrides,
                             {**CONSOLE_SETTINGS, **settings}, log_config=False)  # fmt: skip
        if workflow == "train":
            _save_config(ran, output / "report" / "configs" / f"{scenario}_{method}.yaml")
        settings = {**settings, "resume": False}
    write_json({"fingerprint": fingerprint}, fingerprint_file)


def _analyse(
    config: ExperimentConfig,
    output: Path,
    scenario: str,
    method: str,
    workflow: str,
    prefix: str,
    resume: bool,
    started: float,
) -> None:
    """One analysis workflow of a trained method (into ``<method>/<workflow>/``); with ``resume``,
    skipped when it ran with the same settings on the same model."""
    spec = METHODS[method]
    done = output / scenario / method / workflow / ANALYSIS_DONE
    fingerprint = analysis_fingerprint(config, scenario, method, workflow)
    if resume and _saved_fingerprint(done) == fingerprint:
        _progress(f"{prefix}: {workflow} done before, skipped", started)
        return
    _progress(f"{prefix}: {workflow}", started)
    with _logged(output / scenario / method / LOG_FILE, f"{prefix}: {workflow}", "a"):
        run_bundle(spec.bundle, workflow, scenario, spec.overrides,
                   {**CONSOLE_SETTINGS, **run_settings(config, scenario, method)}, log_config=False)  # fmt: skip
    write_json({"fingerprint": fingerprint}, done)


def mark_output(output: Path) -> None:
    """Write the marker that says ``output`` holds an experiment (what ``--fresh`` may delete)."""
    if not (output / MARKER).is_file():
        write_json({"written_by": "pipeline.experiment"}, output / MARKER)


def fresh_output(output: Path) -> None:
    """Delete what an earlier experiment wrote into ``output``: its scenario folders, report and marker.

    Raises:
        ValueError: ``output`` holds files but no experiment marker (not an experiment's folder).
    """
    if not output.exists() or not any(output.iterdir()):
        return
    if not (output / MARKER).is_file():
        raise ValueError(
            f"--fresh: {output} is not empty and has no {MARKER} marker, so it was not written by the experiment; "
            "refusing to delete it (choose another --output, or empty it yourself)"
        )
    for name in [*scenario_names(), "report"]:
        if (output / name).is_dir():
            shutil.rmtree(output / name)
    (output / MARKER).unlink()


def evaluation_results(config: ExperimentConfig, output: Path) -> list[dict]:
    """The result rows (scenario, method + :data:`pipeline.evaluation.protocol.RESULT_COLUMNS`) every
    method's evaluate workflow wrote, gathered for the report."""
    from pipeline.evaluation.protocol import read_results

    return [
        {"scenario": scenario, "method": method, **row}
        for scenario in config.scenarios
        for method in ordered_methods(config.methods)
        if (output / scenario / method / "eval").is_dir()
        for row in read_results(output / scenario / method / "eval")
    ]


def write_report(config: ExperimentConfig, output: Path) -> Path:
    """results.csv/md, figures, acceptance summary (and layer/saliency figures when enabled)."""
    from pipeline.evaluation.headline import write_headline
    from pipeline.evaluation.report import load_results, write_results

    report_dir = output / "report"
    extra = analysis_figures(config, output, report_dir)
    write_results(
        evaluation_results(config, output), report_dir, extra_figures=extra, notes=test_set_notes(config, output)
    )
    write_headline(load_results(report_dir), report_dir, METHOD_NEEDS)
    write_json(acceptance_summary(config, output), report_dir / "acceptance.json")
    return report_dir


def analysis_figures(config: ExperimentConfig, output: Path, report_dir: Path) -> dict[str, Path]:
    """Title -> figure drawn from the analysed methods' ``saliency/`` and ``layers/`` folders: per
    scenario the saliency grid (bias-inverted test images) and the layer curves (with the
    scenario's combined tables in ``report/layers/<scenario>/``), then the scenarios side by side."""
    from pipeline.evaluation.layer_figures import combine_layer_outputs, compare_scenarios
    from pipeline.evaluation.saliency import saliency_grid_from_files

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
    from pipeline.evaluation.protocol import TEST_SETS_JSON

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
    from pipeline.evaluation.protocol import METRICS_JSON, acceptance

    summary = {}
    for scenario in config.scenarios:
        metrics = {}
        for method in ("erm", "reference", "distilled", "teacher"):
            path = output / scenario / method / "eval" / METRICS_JSON
            if path.is_file():
                metrics[method] = json.loads(path.read_text())
        entry = acceptance(metrics)
        if entry is not None:
            summary[scenario] = entry
    return summary


def _save_config(workflow, path: Path) -> None:
    from pipeline.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(workflow.parser.get()), sort_keys=False))


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _progress(message: str, started: float) -> None:
    elapsed = time.monotonic() - started
    print(f"[experiment {elapsed // 60:02.0f}:{elapsed % 60:02.0f}] {message}", flush=True)


@contextmanager
def _logged(log: Path, step: str, mode: str):
    """Run a step with its log lines in ``log``; on failure, say which step failed and where its log is."""
    from pipeline.engine.log_file import logs_to_file

    try:
        with logs_to_file(log, mode=mode):
            try:
                yield
            except Exception:
                logging.getLogger(__name__).exception("%s failed", step)
                raise
    except Exception as err:
        print(f"{step} failed ({type(err).__name__}: {err}); its log: {log}", file=sys.stderr, flush=True)
        raise


def results_summary(report_dir: Path) -> str:
    """The AUC of every method on every test set, one table per scenario, from ``results.csv``."""
    import pandas as pd

    results = pd.read_csv(report_dir / "results.csv")
    parts = []
    for scenario, rows in results.groupby("scenario", sort=False):
        table = rows.pivot(index="method", columns="test_set", values="auc")
        table = table.reindex(index=rows["method"].unique(), columns=rows["test_set"].unique())
        table = table.rename_axis(index="method", columns=None).reset_index()
        text = table.to_string(index=False, float_format="{:.3f}".format, na_rep="n/a")
        parts.append(f"AUC by test set, {scenario}:\n{text}")
    return "\n\n".join(parts)


def _parse_setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    return key, parse_value(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.experiment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config",
        default="default.yaml",
        help="experiment YAML (a path, or a name in bundles/common/experiments)",
    )
    parser.add_argument("--output", help="output folder (default: the config's `output`)")
    parser.add_argument("--scenarios", nargs="+", help=f"scenarios to run; known: {scenario_names()}")
    parser.add_argument("--methods", nargs="+", help=f"methods to run; known: {list(METHODS)}")
    parser.add_argument("--set", dest="settings", action="append", type=_parse_setting, default=[],
                        metavar="KEY=VALUE", help="override a bundle config id for every run (repeatable)")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="skip methods already run with the same settings, continue interrupted trainings")  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true", help="delete what an earlier experiment wrote there first"
    )
    args = parser.parse_args(argv)
    try:
        config = ExperimentConfig.load(args.config)
        if args.output:
            config.output = args.output
        if args.scenarios:
            config.scenarios = args.scenarios
        if args.methods:
            config.methods = args.methods
        config.settings.update(dict(args.settings))
        config.validate()
        if args.fresh:
            fresh_output(Path(config.output).absolute())
    except ValueError as err:
        parser.error(str(err))
    report = run_experiment(config, resume=args.resume)
    print(f"\n{results_summary(report)}\n")
    print(f"Report (every metric with its 95% CI, figures, configs): {report / 'results.md'}")
    print(f"Training and evaluation logs: {Path(config.output).absolute()}/<scenario>/<method>/{LOG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
