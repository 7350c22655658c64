"""Registry of classification networks and their named, distillable stages.

Every entry knows how to build its network (2D or 3D) and which module paths are its stages,
with each stage's output channel count, so configs can name layers (``layers: [layer2,
layer3]``) and probes/adapters can be sized without running the network.

Built-in entries: ``resnet18`` and ``densenet121`` (MONAI), ``alexnet``, ``simba_cnn`` and
``small_cnn`` (this package). No entry downloads weights; start from saved weights with
:func:`pipeline.networks.load_checkpoint`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from monai.networks.nets import DenseNet, ResNet, resnet18
from torch import nn

from pipeline.networks.alexnet import AlexNet, alexnet_stages
from pipeline.networks.arguments import check_positive_int, check_spatial_dims
from pipeline.networks.densenet import DenseNet121
from pipeline.networks.parallel import unwrap_model
from pipeline.networks.simba_cnn import DEFAULT_CHANNELS as SIMBA_CNN_CHANNELS
from pipeline.networks.simba_cnn import SimbaCNN, simba_cnn_stages
from pipeline.networks.small_cnn import DEFAULT_CHANNELS as SMALL_CNN_CHANNELS
from pipeline.networks.small_cnn import SmallCNN, small_cnn_stages

StagesSpec = Union[Mapping[str, int], Callable[..., Mapping[str, int]]]

_COMMON_ARGUMENTS = ("spatial_dims", "in_channels", "num_classes")
_STAGES_ATTRIBUTE = "_registry_stages"


@dataclass(frozen=True)
class NetworkEntry:
    """One registered network.

    Attributes:
        name: registry name.
        builder: ``builder(spatial_dims=, in_channels=, num_classes=, **options) -> nn.Module``.
        stages: stage module path -> output channels, or a callable taking the builder's
            arguments and returning that mapping.
        options: option names the builder accepts (None: not checked).
    """

    name: str
    builder: Callable[..., nn.Module]
    stages: StagesSpec
    options: frozenset[str] | None


_REGISTRY: dict[str, NetworkEntry] = {}


def _keyword_options(function: Callable[..., Any], exclude: tuple[str, ...]) -> frozenset[str] | None:
    """Keyword parameters of ``function`` minus ``exclude``; None when it takes ``**kwargs``."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(
        p.name for p in parameters if p.kind in keyword_kinds and p.name not in ("self", *exclude)
    )


def register_network(
    name: str,
    builder: Callable[..., nn.Module],
    stages: StagesSpec,
    *,
    options: frozenset[str] | set[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Add a network to the registry so ``build_network(name, ...)`` and configs can use it.

    Args:
        name: registry name, e.g. ``"my_cnn"``.
        builder: called as ``builder(spatial_dims=..., in_channels=..., num_classes=..., **options)``;
            must return an ``nn.Module``.
        stages: ordered mapping stage module path -> output channels, or a callable taking the
            same arguments as ``builder`` and returning one (for stages that depend on options).
        options: option names ``builder`` accepts; by default taken from its signature (not
            checked when it takes ``**kwargs``).
        overwrite: replace an existing entry of the same name.

    Raises:
        ValueError: for an empty or already registered name (without ``overwrite``), a
            non-callable builder, or stages that are neither a mapping nor a callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"network {name!r} is already registered; pass overwrite=True to replace it")
    if not callable(builder):
        raise ValueError(f"builder of network {name!r} must be callable, got {builder!r}")
    if not (isinstance(stages, Mapping) or callable(stages)):
        raise ValueError(f"stages of network {name!r} must be a mapping or a callable, got {stages!r}")
    if options is None:
        options = _keyword_options(builder, _COMMON_ARGUMENTS)
    _REGISTRY[name] = NetworkEntry(name, builder, stages, None if options is None else frozenset(options))


def registered_networks() -> tuple[str, ...]:
    """Names of all registered networks, sorted."""
    return tuple(sorted(_REGISTRY))


def _entry(name: str, spatial_dims: int, in_channels: int, num_classes: int, options: dict) -> NetworkEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(registered_networks())}")
    check_spatial_dims(spatial_dims)
    check_positive_int(in_channels, "in_channels")
    check_positive_int(num_classes, "num_classes")
    entry = _REGISTRY[name]
    if entry.options is not None:
        unknown = sorted(set(options) - entry.options)
        if unknown:
            hint = " (weights are never downloaded: use load_checkpoint)" if "pretrained" in unknown else ""
            raise ValueError(
                f"network {name!r} got unknown option(s) {unknown}{hint}; "
                f"allowed options: {', '.join(sorted(entry.options)) or 'none'}"
            )
    return entry


def _stages(entry: NetworkEntry, arguments: dict) -> OrderedDict[str, int]:
    stages = entry.stages(**arguments) if callable(entry.stages) else entry.stages
    stages = OrderedDict(stages)
    for path, channels in stages.items():
        if not isinstance(path, str) or not path:
            raise ValueError(f"network {entry.name!r}: stage names must be non-empty str, got {path!r}")
        check_positive_int(channels, f"channels of stage {path!r} of network {entry.name!r}")
    return stages


def network_stages(
    name: str, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, **options: Any
) -> OrderedDict[str, int]:
    """Stage module path -> output channels of a registered network, without building it.

    Takes the same arguments as :func:`build_network` and honours options that change channel
    counts (``widen_factor``, ``init_features``/``growth_rate``, ``width``, ``channels``).

    Raises:
        ValueError: for an unknown name or option, or invalid dims/channels/classes.
    """
    entry = _entry(name, spatial_dims, in_channels, num_classes, options)
    return _stages(
        entry, dict(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **options)
    )


def build_network(
    name: str, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, **options: Any
) -> nn.Module:
    """Build a registered network (randomly initialised from torch's global RNG).

    Usable from bundle configs: ``{_target_: pipeline.networks.build_network, name: small_cnn,
    spatial_dims: 2, in_channels: 1, num_classes: 2}``.

    Args:
        name: a name from :func:`registered_networks`.
        spatial_dims: 2 or 3.
        in_channels: input channels (1 grayscale, 3 RGB).
        num_classes: number of output logits.
        options: network-specific options (see docs/networks.md), e.g. ``conv1_t_stride=2``
            for resnet18, ``width=0.5`` for alexnet, ``channels=[8, 16, 32, 64]`` for small_cnn.

    Raises:
        ValueError: for an unknown name (listing the registered ones) or option (listing the
            allowed ones), invalid dims/channels/classes, or a builder whose model lacks a
            declared stage.
    """
    entry = _entry(name, spatial_dims, in_channels, num_classes, options)
    arguments = dict(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **options)
    stages = _stages(entry, arguments)
    model = entry.builder(**arguments)
    if not isinstance(model, nn.Module):
        raise ValueError(f"builder of network {name!r} returned {type(model).__name__}, not an nn.Module")
    module_paths = {path for path, _ in model.named_modules()}
    missing = [path for path in stages if path not in module_paths]
    if missing:
        raise ValueError(f"network {name!r} declares stages {missing} that the built model does not have")
    setattr(model, _STAGES_ATTRIBUTE, stages)
    return model


def stages_of(model: nn.Module) -> OrderedDict[str, int] | None:
    """The registry stages of a model made by :func:`build_network` (also inside DP/DDP), else None."""
    stages = getattr(unwrap_model(model), _STAGES_ATTRIBUTE, None)
    return None if stages is None else OrderedDict(stages)


# ---- built-in entries -------------------------------------------------------------------------


def _build_resnet18(spatial_dims: int, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    return resnet18(
        spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **options
    )


def _resnet18_stages(widen_factor: float = 1.0, **_: Any) -> OrderedDict[str, int]:
    # MONAI's ResNet: block_inplanes = int(x * widen_factor), basic blocks (expansion 1)
    return OrderedDict(
        (f"layer{i}", int(c * widen_factor)) for i, c in enumerate((64, 128, 256, 512), start=1)
    )


def _build_densenet121(spatial_dims: int, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    return DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **options
    )


def _densenet121_stages(init_features: int = 64, growth_rate: int = 32, **_: Any) -> OrderedDict[str, int]:
    # each dense block adds n_layers * growth_rate channels; each transition halves them
    stages, channels = OrderedDict(), init_features
    for i, n_layers in enumerate((6, 12, 24, 16), start=1):
        channels += n_layers * growth_rate
        stages[f"features.denseblock{i}"] = channels
        channels //= 2
    return stages


_MONAI_FIXED = ("spatial_dims", "in_channels", "out_channels", "n_input_channels", "num_classes")
register_network(
    "resnet18",
    _build_resnet18,
    _resnet18_stages,
    options=_keyword_options(ResNet.__init__, (*_MONAI_FIXED, "block", "layers", "block_inplanes")),
)
register_network(
    "densenet121",
    _build_densenet121,
    _densenet121_stages,
    options=_keyword_options(DenseNet.__init__, (*_MONAI_FIXED, "block_config")),
)
register_network("alexnet", AlexNet, lambda width=1.0, **_: alexnet_stages(width))
register_network("simba_cnn", SimbaCNN, lambda channels=SIMBA_CNN_CHANNELS, **_: simba_cnn_stages(channels))
register_network("small_cnn", SmallCNN, lambda channels=SMALL_CNN_CHANNELS, **_: small_cnn_stages(channels))
