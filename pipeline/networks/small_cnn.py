"""SmallCNN: the fast CPU default classifier, 2D or 3D, with four named stages."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from pipeline.networks.arguments import (
    check_channels,
    check_input_size,
    check_positive_int,
    check_spatial_dims,
)

DEFAULT_CHANNELS = (16, 32, 64, 128)


def small_cnn_stages(channels: Sequence[int] = DEFAULT_CHANNELS) -> OrderedDict[str, int]:
    """Stage module path -> output channels of a :class:`SmallCNN` built with ``channels``."""
    return OrderedDict((f"stage{i}", c) for i, c in enumerate(check_channels(channels), start=1))


class SmallCNN(nn.Sequential):
    """A small plain CNN: stages of conv-BN-ReLU (x ``convs_per_stage``) then 2x max-pool.

    The output of stage ``i`` (module ``stage{i}``) has ``channels[i-1]`` channels and
    ``1 / 2**i`` of the input size; a global average pool and a linear layer follow.
    Inputs need at least ``2**len(channels)`` pixels per side (16 by default). The modules run in
    registration order (an ``nn.Sequential``), so the network compiles with ``torch.jit.script``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for grayscale, 3 for RGB).
        num_classes: number of output logits.
        channels: output channels of each stage (one stage per entry).
        convs_per_stage: 3x3 conv-BN-ReLU layers per stage (1 or 2).
        dropout: dropout probability before the final linear layer.

    Raises:
        ValueError: for an invalid ``spatial_dims``, ``channels``, ``convs_per_stage`` or ``dropout``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        convs_per_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        channels = check_channels(channels)
        if convs_per_stage not in (1, 2):
            raise ValueError(f"convs_per_stage must be 1 or 2, got {convs_per_stage!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.min_input_size = 2 ** len(channels)
        self.stage_names = tuple(small_cnn_stages(channels))
        previous = in_channels
        for name, out in zip(self.stage_names, channels):
            layers = []
            for _ in range(convs_per_stage):
                layers.append(
                    Convolution(
                        spatial_dims, previous, out, kernel_size=3, act="relu", norm="batch", bias=False
                    )
                )
                previous = out
            layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=2))
            self.add_module(name, nn.Sequential(*layers))
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.min_input_size, "small_cnn", "use fewer stages (network_options channels)")
        for module in self:
            x = module(x)
        return x
