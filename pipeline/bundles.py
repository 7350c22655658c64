"""Locate the bundles' config files and run a bundle workflow through MONAI's ConfigWorkflow.

A bundle's config is a merge of shared fragments and its own files, in this order:
``common/base.yaml``, ``common/training.yaml``, ``<bundle>/train.yaml``, optional scenario and
extra override files, then for evaluation ``common/evaluation.yaml`` + ``<bundle>/evaluate.yaml``,
for inference ``common/inference.yaml`` + ``<bundle>/inference.yaml``, and for the analyses of a
trained model ``common/layers.yaml`` or ``common/saliency.yaml``.

Command line (prints the equivalent ``python -m monai.bundle run`` command, then runs it)::

    python -m pipeline.bundles baseline train --scenario localized2d --max_epochs 2
    python -m pipeline.bundles baseline layers --scenario localized2d
    python -m pipeline.bundles export baseline --out DIR --checkpoint runs/baseline/models/model.pt
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

BUNDLES_ROOT = Path(os.environ.get("SHORTCUT_KD_BUNDLES", Path(__file__).resolve().parents[1] / "bundles"))
WORKFLOWS = ("train", "evaluate", "inference")
# workflows that analyse a trained model (not part of an exported bundle)
ANALYSES = ("layers", "saliency")
COMMON = "common"


JSON_CONSTANTS = {"true": True, "false": False, "null": None}


def parse_value(text: str) -> Any:
    """A command-line config value: a Python literal (``0.5``, ``[32, 32]``, ``False``), JSON's
    ``true``/``false``/``null``, or else the text itself (a path, a name)."""
    if text in JSON_CONSTANTS:
        return JSON_CONSTANTS[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def add_bundle_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The positional bundle name, with the known bundles in its help."""
    parser.add_argument("bundle", help=f"one of {bundle_names()}")
    return parser


def add_override_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--scenario`` and repeatable ``--config`` override files."""
    parser.add_argument("--scenario", help=f"one of {scenario_names()}")
    parser.add_argument(
        "--config", action="append", default=[], help="extra override YAML/JSON file (repeatable)"
    )
    return parser


def bundle_names(root: Path = BUNDLES_ROOT) -> list[str]:
    """Bundles under ``root``: folders with ``configs/metadata.json``."""
    return sorted(p.parent.parent.name for p in root.glob("*/configs/metadata.json"))


def scenario_names(root: Path = BUNDLES_ROOT) -> list[str]:
    return sorted(p.stem for p in (root / COMMON / "configs" / "scenarios").glob("*.yaml"))


def config_files(
    bundle: str,
    workflow: str = "train",
    scenario: str | None = None,
    overrides: Sequence[str | Path] = (),
    root: Path = BUNDLES_ROOT,
) -> list[str]:
    """Absolute paths of the config files to merge for ``bundle``'s ``workflow``.

    Raises:
        ValueError: unknown bundle, workflow, scenario, or a missing override file.
    """
    if bundle not in bundle_names(root):
        raise ValueError(f"bundle '{bundle}' not found under {root}; bundles: {bundle_names(root)}")
    if workflow not in (*WORKFLOWS, *ANALYSES):
        raise ValueError(f"workflow '{workflow}' is unknown; choose one of {[*WORKFLOWS, *ANALYSES]}")
    common = root / COMMON / "configs"
    own = root / bundle / "configs"
    files = [common / "base.yaml", common / "training.yaml", own / "train.yaml"]
    if scenario is not None:
        path = common / "scenarios" / f"{scenario}.yaml"
        if not path.is_file():
            raise ValueError(f"scenario '{scenario}' not found; scenarios: {scenario_names(root)}")
        files.append(path)
    for extra in overrides:
        extra = Path(extra)
        if not extra.is_file():
            raise ValueError(f"override config file '{extra}' does not exist")
        files.append(extra)
    if workflow == "evaluate":
        files += [common / "evaluation.yaml", own / "evaluate.yaml"]
    elif workflow == "inference":
        files += [common / "inference.yaml", own / "inference.yaml"]
    elif workflow in ANALYSES:
        files.append(common / f"{workflow}.yaml")
    return [str(Path(f).absolute()) for f in files]


def meta_file(bundle: str, root: Path = BUNDLES_ROOT) -> str:
    return str((root / bundle / "configs" / "metadata.json").resolve())


def logging_file(bundle: str, root: Path = BUNDLES_ROOT) -> str:
    return str((root / bundle / "configs" / "logging.conf").absolute())


def run_bundle(
    bundle: str,
    workflow: str = "train",
    scenario: str | None = None,
    overrides: Sequence[str | Path] = (),
    settings: Mapping[str, Any] | None = None,
    root: Path = BUNDLES_ROOT,
    log_config: str | bool | None = None,
):
    """Run one bundle workflow in this process with MONAI's ConfigWorkflow; returns the workflow.

    ``settings`` override config ids (``{"max_epochs": 2, "train#dataloader#batch_size": 8}``),
    exactly like ``--key value`` on ``python -m monai.bundle run``. ``log_config``: the logging
    file to apply (None: the bundle's ``logging.conf``; False: leave the logging set-up alone).
    """
    from monai.bundle import ConfigWorkflow

    files = config_files(bundle, workflow, scenario, overrides, root)
    settings = with_fingerprint(files, settings or {})
    workflow_obj = ConfigWorkflow(
        config_file=files,
        meta_file=meta_file(bundle, root),
        logging_file=logging_file(bundle, root) if log_config is None else log_config,
        workflow_type="train" if workflow == "train" else "infer",
        **settings,
    )
    workflow_obj.initialize()
    workflow_obj.run()
    workflow_obj.finalize()
    return workflow_obj


def with_fingerprint(files: Sequence[str], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` plus ``config_fingerprint`` of the merged config (unless given): the value a
    resumable checkpoint stores and ``resume`` checks (see pipeline.engine.resumable_checkpoint)."""
    from pipeline.engine.resumable_checkpoint import config_fingerprint

    settings = dict(settings)
    if settings.get("config_fingerprint") is None:
        settings["config_fingerprint"] = config_fingerprint(files, settings)
    return settings


def cli_settings(extra: Sequence[str]) -> dict[str, Any]:
    """``--key value`` pairs of a MONAI command line as a dict (values parsed as Python literals
    where they are, else strings, as MONAI's CLI does)."""
    settings: dict[str, Any] = {}
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag.startswith("--"):
            try:
                settings[flag[2:]] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                settings[flag[2:]] = value
    return settings


def monai_command(
    bundle: str, workflow: str, scenario: str | None, overrides: Sequence[str], extra: Sequence[str]
) -> list[str]:
    """The ``python -m monai.bundle run`` command line equivalent to a :func:`run_bundle` call
    (with the config fingerprint added, see :func:`with_fingerprint`)."""
    files = config_files(bundle, workflow, scenario, overrides)
    settings = cli_settings(extra)
    if settings.get("config_fingerprint") is None:
        extra = ["--config_fingerprint", with_fingerprint(files, settings)["config_fingerprint"], *extra]
    return [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", json.dumps(files),
        "--meta_file", meta_file(bundle),
        "--logging_file", logging_file(bundle),
        *extra,
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:  # python -m pipeline.bundles export NAME --out DIR: a take-away bundle folder
        from pipeline.bundle_export import main as export_main

        return export_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bundles",
        description="Run a bundle with its shared config fragments merged (wraps `python -m monai.bundle run`). "
        "Unknown --key value pairs are passed to MONAI as config overrides. "
        "`python -m pipeline.bundles export NAME --out DIR` writes a self-contained bundle folder.",
    )
    add_bundle_arguments(parser)
    parser.add_argument("workflow", nargs="?", default="train", choices=(*WORKFLOWS, *ANALYSES))
    add_override_arguments(parser)
    parser.add_argument("--print-only", action="store_true", help="print the monai.bundle command and exit")
    parser.add_argument(
        "--multi-gpu", type=int, metavar="NPROC", help="train with DDP on NPROC GPUs of this node (torchrun)"
    )
    args, extra = parser.parse_known_args(argv)
    try:
        configs = args.config
        if args.multi_gpu is not None:  # DDP: add the multi-GPU configs, launch with torchrun
            from pipeline.distributed import multi_gpu_configs, torchrun_command

            if args.workflow != "train":
                raise ValueError(f"--multi-gpu is for the train workflow, not '{args.workflow}'")
            configs = configs + multi_gpu_configs(args.bundle)
        command = monai_command(args.bundle, args.workflow, args.scenario, configs, extra)
        if args.multi_gpu is not None:
            command = torchrun_command(command[1:], args.multi_gpu)
    except ValueError as err:
        parser.error(str(err))
    return exec_command(command, args.print_only)


def exec_command(command: Sequence[str], print_only: bool = False) -> int:
    """Print ``command``; unless ``print_only``, replace this process with it."""
    print(shlex.join(command), flush=True)
    if not print_only:
        os.execv(command[0], list(command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
