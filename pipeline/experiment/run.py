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
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import yaml

from pipeline.atomic import write_error_message, write_json
from pipeline.bundles import run_bundle, scenario_names
from pipeline.bundles.overrides import parse_setting
from pipeline.engine.resumable_checkpoint import ResumeError, resume_path
from pipeline.engine.run_lock import OutputInUseError, acquire, release
from pipeline.engine.threads import apply_num_threads
from pipeline.experiment.catalogue import METHODS
from pipeline.experiment.config import ExperimentConfig, ordered_methods
from pipeline.experiment.outputs import Recorder, fresh_output
from pipeline.experiment.plan import (
    METHOD_DONE,
    METHOD_FINGERPRINT,
    Fingerprints,
    bundle_fingerprints,
    run_settings,
    saved_config,
)
from pipeline.experiment.report import results_summary, write_report

# the console shows one progress line per method and epoch; the log lines go to LOG_FILE in the
# method's folder (the report's in report/)
CONSOLE_SETTINGS = {"progress_bar": False, "epoch_progress": True}
LOG_FILE = "log.txt"
# written into an analysis workflow's output folder once it ran: the fingerprint it ran with
ANALYSIS_DONE = "fingerprint.json"


def analyses(config: ExperimentConfig, method: str) -> list[str]:
    """The analysis workflows (``layers``, ``saliency``) the experiment runs for ``method``."""
    if not METHODS[method].analysed:
        return []
    return [w for w, enabled in (("layers", config.layer_analysis), ("saliency", config.saliency)) if enabled]


def _resumable_training(models: Path, fingerprint: str) -> bool:
    """True when ``models`` holds a per-epoch checkpoint of a training with ``fingerprint``."""
    try:
        resume_path(models, fingerprint)
    except (ResumeError, ValueError):
        return False
    return True


def run_experiment(config: ExperimentConfig, resume: bool = False, fresh: bool = False) -> Path:
    """Train and evaluate every method of every scenario, then write the report; returns its folder.

    One experiment per output folder at a time (a lock). ``fresh``: first delete what an earlier
    experiment wrote there (its manifest's files). ``resume``: skip a method whose results were
    computed with the same settings and data (its fingerprint, saved beside them), continue an
    interrupted training from its last epoch, and rerun a method whose settings or data changed.

    Raises:
        ValueError: a bad config, a missing datalist, or an output folder in use (before anything runs).
    """
    output = Path(config.output).absolute()
    steps = [(s, m) for s in config.scenarios for m in ordered_methods(config.methods)]
    with _startup():
        config.validate()
        threads = apply_num_threads(
            config.settings.get("num_threads")
        )  # every step's, unless a method sets its own
        lock = acquire(output, "experiment")
    try:
        with _startup():
            if fresh:
                for note in fresh_output(output, tuple(scenario_names())):
                    print(note, flush=True)
            fingerprints = Fingerprints(config)
            for scenario, method in steps:  # every datalist resolved and checked before anything trains
                fingerprints.method(scenario, method)
        recorder = Recorder(output, tuple(scenario_names()))
        started = time.monotonic()
        _progress(f"torch threads: {threads}", started)
        try:
            for index, (scenario, method) in enumerate(steps, 1):
                prefix = f"[{index}/{len(steps)}] {scenario} {method} ({METHODS[method].bundle})"
                _train_and_evaluate(config, fingerprints, output, scenario, method, prefix, resume, started)
                recorder.update()
                for workflow in analyses(config, method):
                    _analyse(
                        config, fingerprints, output, scenario, method, workflow, prefix, resume, started
                    )
                    recorder.update()
            _progress("report", started)
            with _logged(output / "report" / LOG_FILE, "report", "w"):
                logging.getLogger(__name__).info("torch threads: %d (setting num_threads)", threads)
                report_dir = write_report(config, output)
        finally:
            recorder.update()
    finally:
        release(lock)
    _progress(f"finished: {report_dir / 'results.md'}", started)
    return report_dir


class StartupError(ValueError):
    """A check before anything ran failed (config, data, output folder): the user's to fix."""


class OutputWriteError(RuntimeError):
    """A step could not write its output (disk full, read-only): its message is the one line to show."""


@contextmanager
def _startup():
    """ValueErrors raised inside become :class:`StartupError` (one line on the command line)."""
    try:
        yield
    except StartupError:
        raise
    except ValueError as err:
        raise StartupError(str(err)) from err


def _saved_fingerprint(path: Path) -> str | None:
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


def _train_and_evaluate(
    config: ExperimentConfig,
    fingerprints: Fingerprints,
    output: Path,
    scenario: str,
    method: str,
    prefix: str,
    resume: bool,
    started: float,
) -> None:
    """A method's train and evaluate workflows; with ``resume``, skipped when done with the same settings."""
    spec, settings = METHODS[method], run_settings(config, scenario, method)
    settings["config_fingerprint"] = bundle_fingerprints(config, scenario, method)["train"]
    done = output / scenario / method / METHOD_DONE
    fingerprint_file = output / scenario / method / METHOD_FINGERPRINT
    fingerprint = fingerprints.method(scenario, method)
    if resume and done.is_file():
        if _saved_fingerprint(fingerprint_file) == fingerprint:
            _progress(f"{prefix}: done before, skipped", started)
            return
        _progress(
            f"{prefix}: its settings or data (or a method it uses) changed since it ran: rerun", started
        )
    elif resume and _resumable_training(
        output / scenario / method / "models", settings["config_fingerprint"]
    ):
        _progress(f"{prefix}: continuing its interrupted training", started)
        settings = {**settings, "resume": True}
    for workflow in ("train", "evaluate"):
        _progress(f"{prefix}: {workflow}", started)
        log = output / scenario / method / LOG_FILE
        with _logged(log, f"{prefix}: {workflow}", "w" if workflow == "train" else "a"):
            ran = run_bundle(spec.bundle, workflow, scenario, spec.overrides,
                             {**CONSOLE_SETTINGS, **settings}, log_config=False)  # fmt: skip
        if workflow == "train":
            _save_config(ran, output / saved_config(scenario, method))
        settings = {**settings, "resume": False}
    write_json({"fingerprint": fingerprint}, fingerprint_file)


def _analyse(
    config: ExperimentConfig,
    fingerprints: Fingerprints,
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
    fingerprint = fingerprints.analysis(scenario, method, workflow)
    if resume and _saved_fingerprint(done) == fingerprint:
        _progress(f"{prefix}: {workflow} done before, skipped", started)
        return
    _progress(f"{prefix}: {workflow}", started)
    with _logged(output / scenario / method / LOG_FILE, f"{prefix}: {workflow}", "a"):
        run_bundle(spec.bundle, workflow, scenario, spec.overrides,
                   {**CONSOLE_SETTINGS, **run_settings(config, scenario, method)}, log_config=False)  # fmt: skip
    write_json({"fingerprint": fingerprint}, done)


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
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"[experiment {minutes:02d}:{seconds:02d}] {message}", flush=True)


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
        message = write_error_message(err, str(log.parent))
        if message is not None:  # a full or read-only disk: one line, printed by main
            raise OutputWriteError(f"{step}: {message}; its log: {log}") from err
        print(f"{step} failed ({type(err).__name__}: {err}); its log: {log}", file=sys.stderr, flush=True)
        raise


def _parse_setting(text: str) -> tuple[str, Any]:
    try:
        return parse_setting(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    except ValueError as err:
        parser.error(str(err))
    try:
        report = run_experiment(config, resume=args.resume, fresh=args.fresh)
    except (ValueError, OSError, RuntimeError) as err:
        if isinstance(err, (OutputInUseError, StartupError, OutputWriteError)):
            message = str(err)
        else:
            message = write_error_message(err, str(Path(config.output).absolute()))
        if message is None:
            raise
        print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
        return 2
    print(f"\n{results_summary(report)}\n")
    print(f"Report (every metric with its 95% CI, figures, configs): {report / 'results.md'}")
    print(f"Training and evaluation logs: {Path(config.output).absolute()}/<scenario>/<method>/{LOG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
