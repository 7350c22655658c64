"""SimbaCNN: the 3D CNN of the SimBA bias benchmark (Stanley et al.), in 2D or 3D."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from pipeline.networks.arguments import check_channels, check_positive_int, check_spatial_dims

DEFAULT_CHANNELS = (32, 64, 128, 256, 512)


def simba_cnn_stages(channels: Sequence[int] = DEFAULT_CHANNELS) -> OrderedDict[str, int]:
    """Stage module path -> output channels of a :class:`SimbaCNN` built with ``channels``."""
    return OrderedDict((f"block{i}", c) for i, c in enumerate(check_channels(channels), start=1))


class SimbaCNN(nn.Sequential):
    """Blocks of Conv(3x3[x3], 'same') + BatchNorm + sigmoid + MaxPool(2), global average pool,
    dropout, linear.

    Follows the Keras model of the SimBA code (five blocks of 32..512 filters, Glorot-uniform
    weights, zero biases, max-pools with 'same' padding, i.e. ``ceil_mode=True``, so odd sizes
    such as 173x211x155 work). Differences: the Keras head (AveragePooling3D(2) + Flatten, whose
    size depends on the input) is a global average pool here, so any input size works, and the
    head returns logits instead of softmax probabilities. Blocks are modules ``block1`` ...; the
    modules run in registration order (an ``nn.Sequential``, compiles with ``torch.jit.script``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: number of output logits.
        channels: filters of each block (one block per entry); shrink it for CPU runs,
            e.g. ``(8, 16, 32, 64, 128)``.
        dropout: dropout probability before the linear layer.

    Raises:
        ValueError: for an invalid ``spatial_dims``, ``in_channels``, ``num_classes``,
            ``channels`` or ``dropout``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        channels = check_channels(channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.block_names = tuple(simba_cnn_stages(channels))
        previous = in_channels
        for name, out in zip(self.block_names, channels):
            conv = Convolution(spatial_dims, previous, out, kernel_size=3, act="sigmoid", norm="batch")
            pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, ceil_mode=True)
            self.add_module(name, nn.Sequential(conv, pool))
            previous = out
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
