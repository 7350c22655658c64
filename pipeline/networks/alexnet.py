"""AlexNet (Krizhevsky et al. 2012, torchvision's single-tower layer sequence) in 2D or 3D."""

from __future__ import annotations

from collections import OrderedDict

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from pipeline.networks.arguments import check_input_size, check_positive_int, check_spatial_dims

BASE_CHANNELS = (64, 192, 384, 256, 256)
STAGE_NAMES = tuple(f"features.block{i}" for i in range(1, 6))


INITS = ("pytorch", "kaiming")
"""Weight initialisations of :class:`AlexNet`."""
NORMS = (None, "batch")
"""Normalisation after each convolution of :class:`AlexNet`: none (the original) or batch norm."""


def _check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return float(width)


def alexnet_channels(width: float = 1.0) -> tuple[int, ...]:
    """Output channels of the five conv blocks for a width multiplier (at least 1 each).

    Raises:
        ValueError: when ``width`` is not a positive number.
    """
    width = _check_width(width)
    return tuple(max(1, int(round(c * width))) for c in BASE_CHANNELS)


def alexnet_min_input_size(stem_kernel_size: int = 11, stem_stride: int = 4, stem_padding: int = 2) -> int:
    """Smallest side length an :class:`AlexNet` with this stem accepts (63 for the original stem).

    The three 3-wide, stride-2 max-pools need 15 positions after the stem convolution
    (15 -> 7 -> 3 -> 1), i.e. ``(size + 2 * padding - kernel) // stride + 1 >= 15``.
    """
    return max(1, 14 * stem_stride + stem_kernel_size - 2 * stem_padding)


def alexnet_stages(width: float = 1.0) -> OrderedDict[str, int]:
    """Stage module path (``features.block1`` ... ``features.block5``) -> output channels."""
    return OrderedDict(zip(STAGE_NAMES, alexnet_channels(width)))


class AlexNet(nn.Module):
    """AlexNet: five conv blocks, adaptive average pool, three-layer classifier.

    ``features`` holds ``block1`` ... ``block5``: conv 11/5/3/3/3 with 64/192/384/256/256
    channels (times ``width``), each followed by ReLU (with ``norm="batch"``, by batch norm and
    ReLU, the common "AlexNet-BN" variant); blocks 1, 2 and 5 end with a 3-wide,
    stride-2 max-pool. ``avgpool`` is an adaptive average pool to ``pool_size`` per side and
    ``classifier`` is dropout-linear-ReLU-dropout-linear-ReLU-linear.

    With the original stem (kernel 11, stride 4, padding 2) inputs need at least 63 pixels per
    side (:func:`alexnet_min_input_size`; smaller inputs raise a ValueError in ``forward``); for
    32x32 use e.g. ``stem_kernel_size=3, stem_stride=1, stem_padding=1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: number of output logits.
        width: channel multiplier of the conv blocks (channels are rounded, at least 1).
        stem_kernel_size: kernel of the first conv (11 in the original).
        stem_stride: stride of the first conv (4 in the original).
        stem_padding: padding of the first conv (2 in the original).
        pool_size: output size per side of the adaptive average pool; default 6 in 2D (the
            original) and 3 in 3D (6 would give a 55,296 x ``hidden_features`` first linear layer).
        hidden_features: width of the two hidden linear layers (4096 in the original).
        dropout: dropout probability of the classifier.
        init: ``"pytorch"`` (each layer's default, as torchvision's AlexNet) or ``"kaiming"``
            (convolutions He-normal for ReLU, fan-out, as torchvision's VGG; linear layers
            N(0, 0.01); biases 0).
        norm: None (the original: no normalisation) or ``"batch"`` (batch norm after each
            convolution, before its ReLU).

    Raises:
        ValueError: for an invalid dimension, channel count, size option, dropout, init or norm.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        stem_kernel_size: int = 11,
        stem_stride: int = 4,
        stem_padding: int = 2,
        pool_size: int | None = None,
        hidden_features: int = 4096,
        dropout: float = 0.5,
        init: str = "pytorch",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(stem_kernel_size, "stem_kernel_size")
        check_positive_int(stem_stride, "stem_stride")
        if isinstance(stem_padding, bool) or not isinstance(stem_padding, int) or stem_padding < 0:
            raise ValueError(f"stem_padding must be an int >= 0, got {stem_padding!r}")
        pool_size = (6 if spatial_dims == 2 else 3) if pool_size is None else pool_size
        check_positive_int(pool_size, "pool_size")
        check_positive_int(hidden_features, "hidden_features")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
        self.min_input_size = alexnet_min_input_size(stem_kernel_size, stem_stride, stem_padding)
        self.stem_hint = (
            f"the stem (stem_kernel_size={stem_kernel_size}, stem_stride={stem_stride}, "
            f"stem_padding={stem_padding}) sets the minimum; for small images pass network_options "
            f"stem_kernel_size, stem_stride, stem_padding, e.g. 3, 1, 1 (minimum {alexnet_min_input_size(3, 1, 1)})"
        )
        conv, max_pool = Conv[Conv.CONV, spatial_dims], Pool[Pool.MAX, spatial_dims]
        c1, c2, c3, c4, c5 = alexnet_channels(width)

        def block(c_in: int, c_out: int, kernel: int, pool: bool, **conv_options) -> nn.Sequential:
            layers = [conv(c_in, c_out, kernel, **conv_options)]
            layers += [Norm[Norm.BATCH, spatial_dims](c_out)] if norm == "batch" else []
            layers += [nn.ReLU()] + ([max_pool(kernel_size=3, stride=2)] if pool else [])
            return nn.Sequential(*layers)

        self.features = nn.Sequential(
            OrderedDict(
                block1=block(in_channels, c1, stem_kernel_size, True, stride=stem_stride, padding=stem_padding),
                block2=block(c1, c2, 5, True, padding=2),
                block3=block(c2, c3, 3, False, padding=1),
                block4=block(c3, c4, 3, False, padding=1),
                block5=block(c4, c5, 3, True, padding=1),
            )
        )
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](pool_size)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * pool_size**spatial_dims, hidden_features),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, num_classes),
        )

        if init == "kaiming":
            self._kaiming_init()

    def _kaiming_init(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.min_input_size, "alexnet", self.stem_hint)
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
