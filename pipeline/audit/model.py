"""The model under audit: its network, weights and preprocessing, found from where it was saved.

:func:`load_audit_model` accepts

- a method folder of an experiment (``runs/experiment/<scenario>/<method>``): weights
  ``models/model.pt``, config ``../../report/configs/<scenario>_<method>.yaml`` (saved by the experiment);
- an exported bundle folder (``configs/inference.yaml``, ``models/model.pt``);
- a bundle's output root (``runs/<bundle_name>``: weights only), with ``bundle=`` and ``scenario=``
  naming the repository bundle it was trained with;
- a network of your own: ``checkpoint=`` and ``configs=[network.yaml]``, a bundle config fragment
  that sets ``network_def`` (any MONAI network, or ``network_name`` of the registry), ``image_size``
  and ``spatial_dims``; it is merged over ``bundles/common/configs/base.yaml``, so the usual
  preprocessing (load, channel first, intensity scaling, resize) applies unless it sets its own.

The network, ``preprocessing`` and ``finishing`` (the transforms around the shortcut injection)
come from the config, so the audit sees the images exactly as the model did in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.bundles import BUNDLES_ROOT, COMMON, config_files
from pipeline.networks import load_checkpoint
from pipeline.networks.registry import stages_of

EXPORTED_CONFIGS = ("configs/audit.yaml", "configs/inference.yaml")
EXPERIMENT_CONFIGS = "report/configs"
WEIGHTS = "models/model.pt"


@dataclass
class AuditModel:
    """A trained network ready to audit, with what it needs to see the images as in training.

    Attributes:
        network: the network in eval mode, on the CPU.
        preprocessing: dictionary transforms before the injection point (load, scale, resize).
        finishing: dictionary transforms after it (type conversion).
        spatial_dims, in_channels, num_classes: the network's input and output.
        image_size: the network's input size (None: not set in the config).
        injection_seed: seeds the per-sample random parts of artifacts (as in the experiment).
        stages: named stages for the per-stage counterfactual KL (empty: not known).
        source: where the config and the weights came from, for the report.
        config: the parsed config's raw content (for ``artifact`` and other settings).
        datalist: the datalist the preprocessing was set up for (the one audited).
    """

    network: nn.Module
    preprocessing: list
    finishing: list
    spatial_dims: int
    in_channels: int
    num_classes: int
    image_size: tuple[int, ...] | None
    injection_seed: int = 0
    stages: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    datalist: str | None = None


def _model_files(
    model_dir: Path | None, configs: Sequence[str | Path], bundle: str | None, scenario: str | None
) -> tuple[list[str], dict[str, Any], str]:
    """(config files to merge, settings to set, what kind of model folder it is)."""
    for path in configs:
        if not Path(path).is_file():
            raise ValueError(
                f"--config {path}: file not found (expected a bundle config fragment with network_def)"
            )
    if bundle is not None:
        return config_files(bundle, "inference", scenario, configs), {}, f"repository bundle {bundle!r}"
    if model_dir is None:
        if not configs:
            raise ValueError(
                "give --model DIR, or --checkpoint FILE with --config network.yaml for a network of your own"
            )
        base = BUNDLES_ROOT / COMMON / "configs" / "base.yaml"
        return [str(base), *map(str, configs)], {}, "network config " + ", ".join(map(str, configs))
    if not model_dir.is_dir():
        raise ValueError(
            f"--model {model_dir}: not a folder (expected an experiment's method folder or a bundle folder)"
        )
    for name in EXPORTED_CONFIGS:
        if (model_dir / name).is_file():
            return (
                [str(model_dir / name), *map(str, configs)],
                {"bundle_root": str(model_dir)},
                "exported bundle",
            )
    saved = model_dir.parent.parent / EXPERIMENT_CONFIGS / f"{model_dir.parent.name}_{model_dir.name}.yaml"
    if saved.is_file():
        return [str(saved), *map(str, configs)], {}, f"experiment method folder (config {saved})"
    raise ValueError(
        f"--model {model_dir}: cannot find the config the model was trained with; looked for "
        f"{', '.join(str(model_dir / n) for n in EXPORTED_CONFIGS)} (an exported bundle) and {saved} "
        "(an experiment's method folder). For a bundle's output root pass --bundle NAME --scenario NAME; "
        "for a network of your own pass --checkpoint FILE --config network.yaml"
    )


def load_audit_model(
    datalist: str | Path | None,
    model_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    configs: Sequence[str | Path] = (),
    bundle: str | None = None,
    scenario: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> AuditModel:
    """Build the network of a trained model, load its weights and read its preprocessing.

    Args:
        datalist: the datalist the audit reads (the preprocessing's intensity scaling reads its
            metadata); None: the config's own ``datalist`` (for the embedded data, generated if needed).
        model_dir: an experiment's method folder, an exported bundle or a bundle's output root.
        checkpoint: the weights (default ``<model_dir>/models/model.pt``).
        configs: extra config files merged last (a network of your own: its ``network_def``).
        bundle, scenario: the repository bundle and scenario a bundle's output root was trained with.
        settings: config ids to override (``{"image_size": [32, 32]}``).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: no config found, a config without ``network_def``, or a checkpoint that is not
            a torch file or does not fit the network (a foreign checkpoint); messages name the file.
    """
    from monai.bundle import ConfigParser

    model_dir = None if model_dir is None else Path(model_dir)
    files, defaults, kind = _model_files(model_dir, configs, bundle, scenario)
    parser = ConfigParser()
    parser.read_config(files)
    chosen = {} if datalist is None else {"datalist": str(Path(datalist).absolute())}
    for key, value in {
        **defaults,
        **chosen,
        "device": "$torch.device('cpu')",
        **dict(settings or {}),
    }.items():
        parser[key] = value
    if "datalist" not in parser:
        raise ValueError(f"--datalist is required: the config ({files[-1]}) names no datalist")
    if "network_def" not in parser:
        raise ValueError(
            f"config {files[-1]} has no network_def: set it to your network (a _target_ and its arguments)"
        )
    if checkpoint is None:
        if model_dir is None:
            raise ValueError("--checkpoint is required with --config (the weights of your network)")
        checkpoint = model_dir / WEIGHTS
    network = parser.get_parsed_content("network_def")
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"network_def of {files[-1]} built a {type(network).__name__}, not a torch nn.Module"
        )
    try:
        load_checkpoint(network, checkpoint, strict=True)
    except ValueError as err:
        raise ValueError(
            f"the checkpoint does not fit the network of {kind} (is it another model's checkpoint?): {err}"
        ) from err
    network.eval()

    def value(key: str, default: Any = None) -> Any:
        return parser.get_parsed_content(key) if key in parser else default

    image_size = value("image_size")
    stages = value("audit_stages") or list(stages_of(network) or [])
    return AuditModel(
        network=network,
        preprocessing=list(value("preprocessing", [])),
        finishing=list(value("finishing", [])),
        spatial_dims=int(value("spatial_dims", 2)),
        in_channels=int(value("in_channels", 1)),
        num_classes=int(value("num_classes", 2)),
        image_size=None if image_size is None else tuple(int(s) for s in image_size),
        injection_seed=int(value("injection_seed", 0)),
        stages=[str(s) for s in stages],
        source={"kind": kind, "configs": files, "checkpoint": str(checkpoint)},
        config=parser.get(),
        datalist=str(parser.get_parsed_content("datalist")),
    )


def check_input_size(model: AuditModel, image: torch.Tensor, where: str) -> None:
    """Check one preprocessed image against the network: its size and a forward pass.

    Raises:
        ValueError: the image's spatial size differs from the config's ``image_size``, or the
            network cannot take it (e.g. a fully connected layer sized for another input).
    """
    shape = tuple(int(s) for s in image.shape[1:])
    if len(shape) != model.spatial_dims:
        raise ValueError(
            f"{where} has {len(shape)} spatial dimension(s) after preprocessing (shape {list(image.shape)}) but the "
            f"network config has spatial_dims={model.spatial_dims}"
        )
    if model.image_size is not None and shape != tuple(model.image_size):
        raise ValueError(
            f"{where} is {list(shape)} after preprocessing but the network's image_size is {list(model.image_size)}; "
            "resize the images (a Resized transform in preprocessing) or set image_size to the size it was trained on"
        )
    try:
        with torch.no_grad():
            logits = model.network(image[None].float())
    except RuntimeError as err:
        raise ValueError(
            f"the network cannot take {where} of shape {list(image.shape)} (image_size {list(shape)}): "
            f"{str(err).splitlines()[0]}; set image_size to the size the network was trained on"
        ) from err
    if logits.ndim != 2 or logits.shape[1] != model.num_classes:
        raise ValueError(
            f"the network returns shape {list(logits.shape)} for one image; expected (1, {model.num_classes}) class logits"
        )
