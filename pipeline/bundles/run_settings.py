"""The settings a training run ran with, saved beside its weights for export and inference.

``training.yaml`` calls :func:`save_run_settings` when the training starts (after the start-up checks): ``<ckpt_dir>/run_settings.json``
holds the network, sizes, channels, the intensity range the run scaled its images with, the
artifact (as a config) and the data it read. ``python -m pipeline.bundles export --checkpoint``
takes them from there (:func:`read_run_settings`), so the exported folder describes that run.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text

RUN_SETTINGS = "run_settings.json"
# config ids a run records; export sets them in the exported configs
MODEL_KEYS = ("network_name", "network_options", "spatial_dims", "in_channels", "num_classes", "image_size")
DATA_KEYS = ("intensity_range", "artifact", "bias_rates", "injection_seed", "data_source", "data_params")
CODE_PREFIX = "scripts."
UNRECORDED = "_unrecorded_"  # an artifact that could not be written as a config: its repr
logger = logging.getLogger(__name__)  # a run from an exported bundle imports the shipped code under this name


def artifact_config(artifact: Any) -> dict | None:
    """``artifact`` as a config dict (``{"_target_": class path, **arguments}``), None for none.

    Raises:
        ValueError: an artifact that does not record the arguments it was built with (not a
            ``pipeline.transforms`` artifact) or whose arguments are not plain values.
    """
    if artifact is None or isinstance(artifact, Mapping):
        return None if artifact is None else dict(artifact)
    recorded = getattr(artifact, "init_arguments", None)
    if recorded is None:
        raise ValueError(f"artifact {artifact!r} cannot be recorded: use a pipeline.transforms artifact")
    args, kwargs = recorded
    bound = inspect.signature(type(artifact)).bind(*args, **kwargs).arguments
    config = {"_target_": _class_path(type(artifact))}
    for name, value in bound.items():
        if isinstance(value, Mapping) and name == "kwargs":
            config.update(value)
        else:
            config[name] = value
    try:
        json.dumps(config)
    except TypeError as err:
        raise ValueError(f"artifact {config['_target_']} has arguments that are not plain values: {err}") from None
    return config


def _class_path(cls: type) -> str:
    """``pipeline.transforms.<Name>`` where the package exports it, else its module path."""
    module = cls.__module__.removeprefix(CODE_PREFIX)
    return f"pipeline.transforms.{cls.__qualname__}" if module.startswith("pipeline.transforms") else f"{module}.{cls.__qualname__}"


def save_run_settings(ckpt_dir: str | Path, datalist: str | Path | None, **settings: Any) -> Path:
    """Write ``<ckpt_dir>/run_settings.json``: ``settings`` (config ids: :data:`MODEL_KEYS`,
    :data:`DATA_KEYS`), the artifact as a config and the datalist's absolute path; returns the file.

    ``intensity_range`` should be the range the run used (see
    :func:`pipeline.engine.datalist.run_intensity_range`); the datalist's ``metadata`` source and
    modality are recorded where it has them.
    """
    record = dict(settings)
    if "artifact" in record:
        try:
            record["artifact"] = artifact_config(record["artifact"])
        except ValueError as err:  # a transform of the user's own: the run goes on, export keeps the config's
            logger.warning("run settings: %s", err)
            record["artifact"] = {UNRECORDED: repr(record["artifact"])}
    for key in ("image_size", "bias_rates", "intensity_range"):
        if record.get(key) is not None:
            record[key] = [float(v) if key != "image_size" else int(v) for v in record[key]]
    record["datalist"] = None if datalist is None else str(Path(datalist).absolute())
    record["datalist_metadata"] = _datalist_metadata(datalist)
    path = Path(ckpt_dir) / RUN_SETTINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(record, indent=2, default=str) + "\n", path)
    return path


def _datalist_metadata(datalist: str | Path | None) -> dict:
    """The descriptive part of a datalist's ``metadata`` (source, channels, labels, modality)."""
    try:
        metadata = json.loads(Path(datalist).read_text()).get("metadata", {})
    except (TypeError, OSError, ValueError, AttributeError):
        return {}
    keys = ("source", "flavour", "channels", "spatial_dims", "labels", "modality", "prebiased")
    return {k: metadata[k] for k in keys if isinstance(metadata, dict) and k in metadata}


def read_run_settings(checkpoint: str | Path) -> dict | None:
    """The ``run_settings.json`` beside ``checkpoint``, or None when the run wrote none.

    Raises:
        ValueError: a settings file that is not a JSON object.
    """
    path = Path(checkpoint).parent / RUN_SETTINGS
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"run settings {path} are not valid JSON: {err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"run settings {path} must hold a JSON object, got {type(content).__name__}")
    return content
