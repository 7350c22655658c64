"""Layer probes: small classifiers (global average pool + linear) on intermediate feature maps."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from pipeline.networks.arguments import check_positive_int, check_spatial_dims
from pipeline.networks.registry import network_stages


class StageProbe(nn.Module):
    """Class logits from one stage's feature map: [1x1 conv + ReLU adapter] -> global avg pool -> linear.

    Args:
        in_channels: channels of the feature map this probe reads.
        num_classes: number of output logits.
        spatial_dims: 2 or 3.
        adapter_channels: when given, a 1x1 conv (+ ReLU) maps ``in_channels`` to this many
            channels before pooling.
        stage: stage name used in error messages.

    Raises:
        ValueError: for invalid channel counts or dims; in ``forward``, for a feature map whose
            dimensionality or channel count differs from the expected one.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        adapter_channels: int | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.stage = stage
        if adapter_channels is None:
            self.adapter = nn.Identity()
            pooled_channels = in_channels
        else:
            pooled_channels = check_positive_int(adapter_channels, "adapter_channels")
            self.adapter = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](in_channels, adapter_channels, 1), nn.ReLU()
            )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.linear = nn.Linear(pooled_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        name = f"stage {self.stage!r}" if self.stage else "probe input"
        if features.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{name}: expected a {self.spatial_dims + 2}D feature map (batch, channels, "
                f"{self.spatial_dims} spatial dims), got shape {tuple(features.shape)}"
            )
        if features.shape[1] != self.in_channels:
            raise ValueError(f"{name}: expected {self.in_channels} channels, got {features.shape[1]}")
        return self.linear(torch.flatten(self.pool(self.adapter(features)), 1))


def _module_key(stage: str) -> str:
    # ModuleDict keys cannot contain "."; collisions with names containing "-" are checked
    return stage.replace(".", "-")


class StageProbes(nn.Module):
    """One :class:`StageProbe` per stage, applied to a dict of feature maps.

    Probes are stored in ``self.probes`` (a ModuleDict keyed by the stage name with "." replaced
    by "-", e.g. ``probes.features-denseblock2``); ``stage_names`` keeps the original names and
    order, and ``forward`` returns logits keyed by them.

    Args:
        stage_channels: stage name -> channels of its feature map, in order.
        num_classes: number of logits per probe.
        spatial_dims: 2 or 3.
        adapter_channels: optional 1x1 adapter width shared by all probes.

    Raises:
        ValueError: for an empty ``stage_channels``, names that collide once "." is replaced,
            or invalid channel counts.
    """

    def __init__(
        self,
        stage_channels: Mapping[str, int],
        num_classes: int = 2,
        spatial_dims: int = 2,
        adapter_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(stage_channels, Mapping) or not stage_channels:
            raise ValueError(
                f"stage_channels must be a non-empty mapping stage -> channels, got {stage_channels!r}"
            )
        keys = [_module_key(stage) for stage in stage_channels]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stage names {list(stage_channels)} collide once '.' is replaced by '-'")
        self.stage_names = tuple(stage_channels)
        self.probes = nn.ModuleDict(
            (key, StageProbe(channels, num_classes, spatial_dims, adapter_channels, stage=stage))
            for key, (stage, channels) in zip(keys, stage_channels.items())
        )

    def probe(self, stage: str) -> StageProbe:
        """The probe of one stage (by its original name)."""
        if stage not in self.stage_names:
            raise ValueError(f"no probe for stage {stage!r}; probed stages: {', '.join(self.stage_names)}")
        return self.probes[_module_key(stage)]

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits per stage; ``features`` must hold every probed stage (extra entries are ignored).

        Raises:
            ValueError: for a missing stage, or a feature map with the wrong channels.
        """
        missing = [stage for stage in self.stage_names if stage not in features]
        if missing:
            raise ValueError(f"features lack probed stage(s) {missing}; got {list(features)}")
        return OrderedDict(
            (stage, self.probes[_module_key(stage)](features[stage])) for stage in self.stage_names
        )

    @classmethod
    def from_network(
        cls,
        name: str,
        stages: Sequence[str] | None = None,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        adapter_channels: int | None = None,
        **network_options: Any,
    ) -> StageProbes:
        """Probes for stages of a registered network, sized from the registry (nothing is run).

        Args:
            name: registry name of the network.
            stages: stage names to probe (None: all registry stages).
            spatial_dims, in_channels, num_classes, network_options: as for ``build_network``.
            adapter_channels: optional 1x1 adapter width.

        Raises:
            ValueError: for a stage the registry does not list for this network (listing those it does).
        """
        registered = network_stages(name, spatial_dims, in_channels, num_classes, **network_options)
        if stages is None:
            stages = list(registered)
        if isinstance(stages, str):
            stages = [stages]
        unknown = [stage for stage in stages if stage not in registered]
        if unknown:
            raise ValueError(f"{name} has no stage(s) {unknown}; its stages: {', '.join(registered)}")
        return cls(
            OrderedDict((s, registered[s]) for s in stages), num_classes, spatial_dims, adapter_channels
        )
