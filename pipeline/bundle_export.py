"""Export a bundle as a self-contained MONAI bundle folder that a user can take away.

The repository's bundles share config fragments, the scenario and ``logging.conf``
(``bundles/common``) and refer to the repository (a symlinked ``LICENSE``, ``bundle_root`` under
``bundles/``, outputs under the working directory). :func:`export_bundle` writes one folder in MONAI's bundle layout::

    LICENSE                      a copy of the project's license
    configs/train.yaml           every fragment merged: runnable alone
    configs/evaluate.yaml        (``python -m monai.bundle run --config_file configs/evaluate.yaml``)
    configs/inference.yaml
    configs/audit.yaml           the shortcut audit (pipeline.audit, docs/audit.md)
    configs/metadata.json        versions, input/output format from the config, eval_metrics from the run
    configs/logging.conf
    docs/README.md               overview, data, training, performance, commands, references, license
    models/model.pt              the trained weights (with --checkpoint); models/teacher.pt for the teacher

``bundle_root`` is ``.`` (run the commands inside the folder, or pass ``--bundle_root``), the
weights are ``@bundle_root/models/model.pt`` and outputs go to ``@bundle_root/runs`` (``--output_root``).
The folder passes MONAI model-zoo's ``ci/verify_bundle.py`` (``min`` and ``full``). Command line::

    python -m pipeline.bundles export baseline --out exported/baseline --checkpoint runs/baseline/models/model.pt
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import yaml

from pipeline.bundles import (
    BUNDLES_ROOT,
    EXPORTED_ANALYSES,
    WORKFLOWS,
    add_bundle_arguments,
    add_override_arguments,
    config_files,
    logging_file,
    meta_file,
    parse_value,
)

PACKAGE = "shortcut-kd"
# config ids rewritten so that nothing refers outside the exported folder
TAKE_AWAY_SETTINGS = {
    "bundle_root": ".",
    "output_root": "$@bundle_root + '/runs'",
    "ckpt_dir": "$@bundle_root + '/models'",
}
# only where the merged config has them: the weights a workflow reads, the teacher it distils from
TAKE_AWAY_IF_PRESENT = {
    "checkpoint": "$@bundle_root + '/models/model.pt'",
    "teacher_checkpoint": "$@bundle_root + '/models/teacher.pt'",
}
# metrics of the run's metrics.json copied into metadata eval_metrics (per test set)
EVAL_METRICS = ("auc", "auc_low", "auc_high", "accuracy", "delta_tpr", "worst_group_accuracy")
FLOAT32_MAX = 3.4028234663852886e38
README_TEST_SETS = ("in_distribution", "bias_free", "bias_inverted", "cf_with", "ood")


def merged_config(
    bundle: str,
    workflow: str,
    scenario: str | None = None,
    overrides: Sequence[str | Path] = (),
    settings: Mapping[str, Any] | None = None,
    root: Path = BUNDLES_ROOT,
) -> dict:
    """One workflow's config with every fragment merged and the take-away paths set.

    ``settings`` override config ids like ``--key value`` on ``python -m monai.bundle run``
    (``a#b`` ids set nested entries).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, workflow, scenario, overrides, root))
    for key, value in {**TAKE_AWAY_SETTINGS, **dict(settings or {})}.items():
        parser[key] = value
    for key, value in TAKE_AWAY_IF_PRESENT.items():
        if key in parser:
            parser[key] = value
    config = {k: v for k, v in parser.get().items() if k != "_meta_"}
    config["imports"] = list(dict.fromkeys(config.get("imports", [])))  # each fragment imports its own
    return config if workflow == "train" else reachable_config(config)


def reachable_config(config: Mapping) -> dict:
    """``config`` without the top-level entries that its workflow sections, MONAI's inference
    properties and ``network_def`` never refer to (for evaluation and inference: the training
    engine's entries, left over from the merge with train.yaml)."""
    from monai.bundle.properties import InferProperties
    from monai.bundle.reference_resolver import ReferenceResolver

    def top(config_id: str) -> str:
        return config_id.replace("::", "#").split("#")[0]

    roots = ["imports", "initialize", "run", "finalize", "network_def"]
    roots += [top(prop["id"]) for prop in InferProperties.values()]
    keep, todo = set(), [key for key in roots if key in config]
    while todo:
        key = todo.pop()
        if key in keep:
            continue
        keep.add(key)
        refs = ReferenceResolver.find_refs_in_config(config[key], id=key)
        todo += [top(ref) for ref in refs if top(ref) in config]
    return {k: v for k, v in config.items() if k in keep}


def network_from_config(config: Mapping) -> Any:
    """The config's ``network_def``, built (on the CPU) for loading and checking weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(dict(config))
    return parser.get_parsed_content("network_def")


def export_metadata(
    bundle: str, config: Mapping, run_metrics: Mapping[str, Mapping] | None, root: Path = BUNDLES_ROOT
) -> dict:
    """The bundle's metadata with this environment's versions, the config's input/output format and
    ``eval_metrics`` from ``run_metrics`` (``{test set: {metric: value}}``, a run's metrics.json)."""
    import monai
    import numpy
    import torch

    meta = json.loads(Path(meta_file(bundle, root)).read_text())
    meta["monai_version"] = monai.__version__
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    meta["required_packages_version"] = {
        **meta.get("required_packages_version", {}),
        PACKAGE: package_metadata.version(PACKAGE),
    }
    io_format = meta["network_data_format"]
    image = io_format["inputs"]["image"]
    image["num_channels"] = int(config["in_channels"])
    image["spatial_shape"] = [int(s) for s in config["image_size"]]
    pred = io_format["outputs"]["pred"]
    pred["num_channels"] = int(config["num_classes"])
    meta["eval_metrics"] = flat_eval_metrics(run_metrics or {})
    return meta


def flat_eval_metrics(run_metrics: Mapping[str, Mapping]) -> dict[str, float]:
    """``{"<test set>_<metric>": value}`` for :data:`EVAL_METRICS`; undefined (null/NaN) values left out."""
    flat = {}
    for test_set, values in run_metrics.items():
        for metric in EVAL_METRICS:
            value = values.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                flat[f"{test_set}_{metric}"] = float(value)
    return flat


def read_run_metrics(path: str | Path) -> dict[str, dict]:
    """A run's ``eval/metrics.json`` (``{test set: {metric: value}}``).

    Raises:
        ValueError: when the file is not JSON or not a mapping of test sets to metric mappings.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"metrics file {path} cannot be read as JSON: {err}") from err
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ValueError(f"metrics file {path} must map test set names to metric dicts, got {content!r:.200}")
    return content


def _write_yaml(config: Mapping, path: Path, header: str) -> None:
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False, width=110)
    path.write_text(header + text)


def _config_header(bundle: str, workflow: str) -> str:
    return (
        f"# {bundle} bundle, {workflow} workflow: exported by `python -m pipeline.bundles export` with every\n"
        "# shared fragment merged, so this file runs alone from the bundle folder:\n"
        f"#   python -m monai.bundle run --config_file configs/{workflow}.yaml\n"
        "# Paths are under @bundle_root ('.': the folder you run it in; --bundle_root /path/to/bundle\n"
        "# from elsewhere); weights: models/model.pt; outputs: --output_root (default runs/).\n"
    )


def _checked_weights(config: Mapping, checkpoint: Path) -> dict:
    """The checkpoint's network weights as a plain state dict, after checking they fit the config.

    Raises:
        ValueError: when the checkpoint does not exist or does not fit ``network_def``.
    """

    from pipeline.networks import load_checkpoint

    if not checkpoint.is_file():
        raise ValueError(f"checkpoint {checkpoint} does not exist")
    network = network_from_config(config)
    report = load_checkpoint(network, checkpoint, strict=False)
    if not report.complete:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the exported network "
            f"({config['network_name']}, spatial_dims {config['spatial_dims']}, in_channels "
            f"{config['in_channels']}, num_classes {config['num_classes']}); pass the settings the run "
            f"was trained with (--config / --key value):\n{report.summary()}"
        )
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


def export_bundle(
    bundle: str,
    out: str | Path,
    checkpoint: str | Path | None = None,
    scenario: str | None = None,
    overrides: Sequence[str | Path] = (),
    settings: Mapping[str, Any] | None = None,
    metrics: str | Path | None = None,
    root: Path = BUNDLES_ROOT,
) -> Path:
    """Write ``bundle`` as a self-contained MONAI bundle folder ``out``; returns ``out``.

    Args:
        bundle: a bundle name (``baseline``, ``teacher``, ``distillation``).
        out: the folder to write; must not exist or be empty. Written beside it first, then renamed.
        checkpoint: a trained run's ``models/model.pt`` (checked against the config, saved as
            ``models/model.pt``); the teacher's ``teacher.pt`` beside it is copied too.
        scenario, overrides, settings: as for a run (the settings the run was trained with).
        metrics: the run's ``metrics.json``; default ``<run>/eval/metrics.json`` beside the
            checkpoint's ``models`` folder when it exists.
        root: the bundles folder.

    Raises:
        ValueError: for an unknown bundle/scenario, a missing override file, an ``out`` that is
            a non-empty folder or a file, a checkpoint that is missing or does not fit, or an
            unreadable metrics file.
    """
    import torch

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"export folder {out} exists and is not an empty folder")
    configs = {wf: merged_config(bundle, wf, scenario, overrides, settings, root) for wf in (*WORKFLOWS, *EXPORTED_ANALYSES)}
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if metrics is None and checkpoint is not None:
        default = checkpoint.parent.parent / "eval" / "metrics.json"
        metrics = default if default.is_file() else None
    run_metrics = None if metrics is None else read_run_metrics(metrics)
    weights = None if checkpoint is None else _checked_weights(configs["inference"], checkpoint)
    meta = export_metadata(bundle, configs["inference"], run_metrics, root)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        (staging / "configs").mkdir()
        (staging / "docs").mkdir()
        (staging / "models").mkdir()
        for workflow, config in configs.items():
            _write_yaml(config, staging / "configs" / f"{workflow}.yaml", _config_header(bundle, workflow))
        (staging / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        shutil.copyfile(logging_file(bundle, root), staging / "configs" / "logging.conf")
        shutil.copyfile(root / bundle / "LICENSE", staging / "LICENSE")
        if weights is not None:
            torch.save(weights, staging / "models" / "model.pt")
            teacher = checkpoint.parent / "teacher.pt"
            if bundle == "teacher" and teacher.is_file():
                shutil.copyfile(teacher, staging / "models" / "teacher.pt")
        (staging / "docs" / "README.md").write_text(
            bundle_readme(meta, configs["train"], run_metrics, trained=weights is not None)
        )
        staging.chmod(0o755)
        staging.replace(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _performance_section(run_metrics: Mapping[str, Mapping] | None, trained: bool) -> str:
    if not run_metrics:
        if trained:
            return "The weights were exported without an evaluation of the run (no metrics.json).\n"
        return "No trained weights were exported: train first (see Commands), then evaluate.\n"
    names = [n for n in README_TEST_SETS if n in run_metrics] + sorted(
        set(run_metrics) - set(README_TEST_SETS)
    )
    lines = [
        "Measured by the run this bundle was exported from (`evaluate` workflow, its metrics.json);",
        "AUC with its 95% bootstrap interval, ΔTPR = TPR with the artifact minus without:",
        "",
        "| test set | n | AUC | 95% CI | accuracy | ΔTPR | worst-group acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"

    for name in names:
        m = run_metrics[name]
        lines.append(
            f"| {name} | {m.get('n', '-')} | {fmt(m.get('auc'))} | {fmt(m.get('auc_low'))}-{fmt(m.get('auc_high'))}"
            f" | {fmt(m.get('accuracy'))} | {fmt(m.get('delta_tpr'))} | {fmt(m.get('worst_group_accuracy'))} |"
        )
    return "\n".join(lines) + "\n"


def bundle_readme(
    meta: Mapping, config: Mapping, run_metrics: Mapping[str, Mapping] | None, trained: bool
) -> str:
    """docs/README.md of an exported bundle, with model-zoo's sections."""
    image = meta["network_data_format"]["inputs"]["image"]
    shape = "x".join(str(s) for s in image["spatial_shape"])
    references = "\n".join(f"- {r}" for r in meta.get("references", []))
    packages = ", ".join(f"{k} {v}" for k, v in meta["required_packages_version"].items())
    teacher_note = (
        " Distillation needs the teacher bundle's `teacher.pt` at `models/teacher.pt`"
        " (or `--teacher_checkpoint /path/to/teacher.pt`)."
        if "teacher_checkpoint" in config
        else ""
    )
    return f"""# {meta["name"]}

## Overview

{meta["task"]}. {meta["description"]}

Network: `{config["network_name"]}` (options {config["network_options"]}), {config["spatial_dims"]}D,
input: {image["num_channels"]} channel(s) of {shape}; output: {meta["pred_classes"]}.
Intended use: {meta.get("intended_use", "research")}.

## Data

{meta["data_source"]}. Inputs: {meta["image_classes"]}; labels: {meta["label_classes"]}.
The default datalist is generated on first use into `$SHORTCUT_KD_DATA` (default
`~/.cache/shortcut-kd`); your own: `--datalist /path/to/datalist.json` (MONAI decathlon format,
roles `train`, `teacher`, `validation`, `test`, optionally `test_ood`; each item `image`, `label`, `id`).
Set `--image_size`, `--spatial_dims`, `--in_channels` to match it.

## Training

`configs/train.yaml`: MONAI `SupervisedTrainer`, Adam (learning rate {config["learning_rate"]}),
`max_epochs` {config["max_epochs"]}, batch size {config["batch_size"]}; the best checkpoint by validation AUC
is written to `models/model.pt` (it replaces the exported weights), the final one to
`models/checkpoint_final.pt`.{teacher_note}

## Performance

{_performance_section(run_metrics, trained)}
## Commands

Requires the `{PACKAGE}` package and its dependencies ({packages}); run inside this folder:

    python -m monai.bundle run --config_file configs/train.yaml
    python -m monai.bundle run --config_file configs/evaluate.yaml     # runs/<bundle>/eval/
    python -m monai.bundle run --config_file configs/inference.yaml --input /folder/of/images
    python -m monai.bundle run --config_file configs/inference.yaml --input datalist.json --input_role test
    python -m monai.bundle run --config_file configs/audit.yaml --datalist datalist.json   # runs/<bundle>/audit/: is it using a shortcut?
    python -m monai.bundle ckpt_export --net_id network_def --filepath models/model.ts \\
        --ckpt_file models/model.pt --meta_file configs/metadata.json --config_file configs/inference.yaml

Inference writes `runs/<bundle>/inference/predictions.csv` (class probabilities, softmax of the
logits). From another folder add `--bundle_root /path/to/this/bundle`.

## References

{references}

## License

See `LICENSE` (the `{PACKAGE}` project's license). {meta["copyright"]}.
"""


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``["--key", "value", ...]`` -> ``{"key": value}``; values read by :func:`pipeline.bundles.parse_value`.

    Raises:
        ValueError: for an item that is not ``--key`` followed by a value, or a value that opens a
            mapping or list but does not parse (the message names the key).
    """
    if len(pairs) % 2 or not all(str(k).startswith("--") and len(k) > 2 for k in pairs[::2]):
        raise ValueError(f"config overrides must be --key value pairs, got {list(pairs)}")
    settings = {}
    for key, value in zip(pairs[::2], pairs[1::2]):
        try:
            settings[key[2:]] = parse_value(value)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bundles export NAME --out DIR [--checkpoint ...] [--scenario ...] [--key value ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bundles export",
        description="Write a bundle as a self-contained MONAI bundle folder (merged configs, LICENSE, "
        "metadata, docs, weights). Unknown --key value pairs override config ids, as for a run: "
        "give the settings the run was trained with.",
    )
    add_bundle_arguments(parser)
    parser.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--checkpoint", help="a trained run's models/model.pt, exported as models/model.pt")
    parser.add_argument("--metrics", help="the run's metrics.json (default: <run>/eval/metrics.json)")
    add_override_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    try:
        out = export_bundle(
            args.bundle,
            args.out,
            args.checkpoint,
            args.scenario,
            args.config,
            parse_settings(extra),
            args.metrics,
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"exported bundle '{args.bundle}' to {out}")
    return 0
