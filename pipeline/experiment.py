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
from pathlib import Path
from typing import Any, Sequence

import yaml

from pipeline.atomic import write_json
from pipeline.bundles import config_files, parse_value, run_bundle, scenario_names
from pipeline.engine.resumable_checkpoint import ResumeError, config_fingerprint, resume_path
from pipeline.experiment_config import (  # noqa: F401 (the experiment's public names)
    ANALYSED_METHODS,
    METHOD_NEEDS,
    METHODS,
    ExperimentConfig,
    Method,
    ordered_methods,
)
from pipeline.experiment_report import (  # noqa: F401
    acceptance_summary,
    results_summary,
    test_set_notes,
    write_report,
)

# the console shows one progress line per method and epoch; the log lines go to LOG_FILE in the
# method's folder (the report's in report/)
CONSOLE_SETTINGS = {"progress_bar": False, "epoch_progress": True}
LOG_FILE = "log.txt"
# written into an analysis workflow's output folder once it ran: the fingerprint it ran with
ANALYSIS_DONE = "fingerprint.json"
# written into the output folder: `--fresh` deletes only folders that hold it
MARKER = ".shortcut-kd-experiment"


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


def _parse_setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    try:
        return key, parse_value(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--set {key}: {err}") from None


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
