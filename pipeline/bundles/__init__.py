"""Locate the bundles' config files and run a bundle workflow through MONAI's ConfigWorkflow.

A bundle's config is a merge of shared fragments and its own files, in this order:
``common/base.yaml``, ``common/training.yaml``, ``<bundle>/train.yaml``, the scenario
(``common/scenarios/<name>.yaml``, :data:`DEFAULT_SCENARIO` when none is given) and extra override
files, then for evaluation ``common/evaluation.yaml`` and for inference ``common/inference.yaml``,
each followed by the bundle's own ``evaluate.yaml``/``inference.yaml`` where it has one, and for the
analyses of a trained model ``common/layers.yaml``, ``common/saliency.yaml`` or
``common/audit.yaml`` (the shortcut audit, also written into exported bundles). Multi-GPU
training adds ``common/multi_gpu.yaml`` and the bundle's ``multi_gpu_train.yaml`` (if any).

The command line is :mod:`pipeline.bundles.cli` (``python -m pipeline.bundles``)::

    python -m pipeline.bundles baseline train --scenario localized2d --max_epochs 2
    python -m pipeline.bundles baseline layers --scenario localized2d
    python -m pipeline.bundles baseline audit --scenario localized2d
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

import yaml


def _bundles_root() -> Path:
    """``$SHORTCUT_KD_BUNDLES``, else the checkout's ``bundles/`` beside this package, else the copy
    that ``pip install .`` puts under ``<prefix>/share/shortcut-kd/bundles`` (setup.cfg data_files)."""
    if os.environ.get("SHORTCUT_KD_BUNDLES"):
        return Path(os.environ["SHORTCUT_KD_BUNDLES"])
    checkout = Path(__file__).resolve().parents[2] / "bundles"
    installed = Path(sys.prefix) / "share" / "shortcut-kd" / "bundles"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


BUNDLES_ROOT = _bundles_root()
WORKFLOWS = ("train", "evaluate", "inference")
# workflows that analyse a trained model (not part of an exported bundle, except EXPORTED_ANALYSES)
ANALYSES = ("layers", "saliency", "audit")
EXPORTED_ANALYSES = ("audit",)
COMMON = "common"
# merged when no scenario is given: the scenario files are the only place data and artifact are set
DEFAULT_SCENARIO = "localized2d"
MULTI_GPU_COMMON = "multi_gpu.yaml"
MULTI_GPU_TRAIN = "multi_gpu_train.yaml"
LOGGING_CONF = "logging.conf"


JSON_CONSTANTS = {"true": True, "false": False, "null": None}


def parse_value(text: str) -> Any:
    """A command-line config value: a Python literal (``0.5``, ``[32, 32]``, ``False``), JSON's
    ``true``/``false``/``null``, a YAML flow mapping or list (``{stem_stride: 2}``), or else the
    text itself (a path, a name).

    Raises:
        ValueError: text that opens a mapping or list (``{``/``[``) but is neither a literal nor YAML.
    """
    if text in JSON_CONSTANTS:
        return JSON_CONSTANTS[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if text.lstrip().startswith(("{", "[")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(
                f"value {text!r} opens a mapping or list but is not valid YAML or a Python literal "
                f"(e.g. {{stem_stride: 2}} or [32, 32]): {str(err).splitlines()[0]}"
            ) from None
    return text


def add_bundle_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The positional bundle name, with the known bundles in its help."""
    parser.add_argument("bundle", help=f"one of {bundle_names()}")
    return parser


def add_override_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--scenario`` and repeatable ``--config`` override files."""
    parser.add_argument("--scenario", help=f"one of {scenario_names()} (default {DEFAULT_SCENARIO})")
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

    ``scenario`` None merges :data:`DEFAULT_SCENARIO`. A bundle's own ``evaluate.yaml`` and
    ``inference.yaml`` are optional: without one the shared fragment is the whole workflow.

    Raises:
        ValueError: unknown bundle, workflow, scenario, or a missing override file.
    """
    if bundle not in bundle_names(root):
        raise ValueError(f"bundle '{bundle}' not found under {root}; bundles: {bundle_names(root)}")
    if workflow not in (*WORKFLOWS, *ANALYSES):
        raise ValueError(f"workflow '{workflow}' is unknown; choose one of {[*WORKFLOWS, *ANALYSES]}")
    common = root / COMMON / "configs"
    own = root / bundle / "configs"
    scenario = scenario or DEFAULT_SCENARIO
    scenario_file = common / "scenarios" / f"{scenario}.yaml"
    if not scenario_file.is_file():
        raise ValueError(f"scenario '{scenario}' not found; scenarios: {scenario_names(root)}")
    files = [common / "base.yaml", common / "training.yaml", own / "train.yaml", scenario_file]
    for extra in overrides:
        extra = Path(extra)
        if not extra.is_file():
            raise ValueError(f"override config file '{extra}' does not exist")
        files.append(extra)
    if workflow == "evaluate":
        files += [common / "evaluation.yaml", *_if_present(own / "evaluate.yaml")]
    elif workflow == "inference":
        files += [common / "inference.yaml", *_if_present(own / "inference.yaml")]
    elif workflow in ANALYSES:
        files.append(common / f"{workflow}.yaml")
    return [str(Path(f).absolute()) for f in files]


def multi_gpu_configs(bundle: str, root: Path = BUNDLES_ROOT) -> list[str]:
    """The override files that turn ``bundle``'s training into DDP training, in merge order:
    ``common/multi_gpu.yaml``, then the bundle's ``multi_gpu_train.yaml`` where it has one.

    Raises:
        ValueError: unknown bundle, or no ``common/configs/multi_gpu.yaml`` under ``root``.
    """
    if bundle not in bundle_names(root):
        raise ValueError(f"bundle '{bundle}' not found under {root}; bundles: {bundle_names(root)}")
    shared = root / COMMON / "configs" / MULTI_GPU_COMMON
    if not shared.is_file():
        raise ValueError(f"bundle '{bundle}' cannot train on several GPUs: {shared} is missing")
    files = [shared, *_if_present(root / bundle / "configs" / MULTI_GPU_TRAIN)]
    return [str(f.absolute()) for f in files]


def _if_present(path: Path) -> list[Path]:
    """``[path]`` when the (optional) file exists, else nothing to merge."""
    return [path] if path.is_file() else []


def meta_file(bundle: str, root: Path = BUNDLES_ROOT) -> str:
    return str((root / bundle / "configs" / "metadata.json").resolve())


def logging_file(bundle: str, root: Path = BUNDLES_ROOT) -> str:
    """The bundle's ``configs/logging.conf`` where it has one, else the shared ``common/configs/logging.conf``."""
    own = root / bundle / "configs" / LOGGING_CONF
    return str((own if own.is_file() else root / COMMON / "configs" / LOGGING_CONF).absolute())


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


NONE_WORDS = ("None", "null")


def explicit_none(extra: Sequence[str]) -> list[str]:
    """``--key None`` (or ``null``) as ``--key $None``: MONAI's command line (fire) reads a bare
    None as "not given" and drops the override, so ``--artifact None`` would keep the artifact."""
    return [
        "$None" if value in NONE_WORDS and index > 0 and str(extra[index - 1]).startswith("--") else value
        for index, value in enumerate(extra)
    ]


OWN_DATA_NOTE = (
    "note: --datalist without --scenario or --artifact: your images are used as stored, no artifact "
    "is injected (add --artifact SPEC or --scenario NAME to inject one; docs/own_data.md)"
)


def own_data_settings(
    scenario: str | None, settings: Mapping[str, Any], overrides: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """``settings``, with ``artifact: None`` when they name a datalist of the user's own and neither
    ``scenario``, ``artifact`` nor an override file (``--config``) sets the artifact: injecting the
    default scenario's corner patch into a user's images is a choice they make, not a default."""
    settings = dict(settings)
    chosen = scenario is not None or "artifact" in settings or any(_sets_artifact(f) for f in overrides)
    if "datalist" in settings and not chosen:
        print(OWN_DATA_NOTE, file=sys.stderr, flush=True)
        settings["artifact"] = None
    return settings


def _sets_artifact(config_file: str | Path) -> bool:
    """Whether an override file sets ``artifact`` at its top level."""
    content = yaml.safe_load(Path(config_file).read_text()) if Path(config_file).is_file() else None
    return isinstance(content, dict) and "artifact" in content


def monai_command(
    bundle: str, workflow: str, scenario: str | None, overrides: Sequence[str], extra: Sequence[str]
) -> list[str]:
    """The ``python -m monai.bundle run`` command line equivalent to a :func:`run_bundle` call
    (with the config fingerprint added, see :func:`with_fingerprint`).

    ``extra`` (``--key value`` pairs) is read once by :func:`pipeline.bundles.overrides.parse_overrides`;
    the fingerprint and the command's arguments both come from that reading, and every key must
    be an id of the merged config.

    Raises:
        ValueError: a flag without a value, an unknown id (naming the closest), a bad value.
    """
    from pipeline.bundles.overrides import check_keys, monai_arguments, parse_overrides

    files = config_files(bundle, workflow, scenario, overrides)
    extra = explicit_none(extra)
    settings = own_data_settings(scenario, parse_overrides(extra), overrides)
    check_keys(files, settings, f"not in the merged config of {bundle} {workflow}")
    fingerprint = with_fingerprint(files, settings)["config_fingerprint"]
    settings = {"config_fingerprint": fingerprint, **{k: v for k, v in settings.items() if k != "config_fingerprint"}}
    return [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", json.dumps(files),
        "--meta_file", meta_file(bundle),
        "--logging_file", logging_file(bundle),
        *monai_arguments(settings),
    ]  # fmt: skip


def exec_command(command: Sequence[str], print_only: bool = False) -> int:
    """Print ``command``; unless ``print_only``, replace this process with it."""
    print(shlex.join(command), flush=True)
    if not print_only:
        os.execv(command[0], list(command))
    return 0
