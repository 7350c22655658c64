"""MONAI's DenseNet-121 with a clear error for a too-small input."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet121 as MonaiDenseNet121

from pipeline.networks.arguments import check_input_size

# MONAI's DenseNet: a 7/2 convolution, a 3/2 max pooling, then three transitions that halve the
# size (average pooling 2/2); every transition needs at least 2 pixels per side
DENSENET_MIN_INPUT_SIZE = 29


class DenseNet121(MonaiDenseNet121):
    """MONAI's DenseNet-121 that reports a too-small input (below 29 pixels per side) as a ValueError."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.min_input_size = DENSENET_MIN_INPUT_SIZE  # attributes, so that TorchScript sees them
        self.size_hint = "its stem and three transitions divide the size by 32; resize the images (image_size) or use resnet18"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.min_input_size, "densenet121", self.size_hint)
        # MONAI's DenseNet.forward, written out (TorchScript has no super())
        return self.class_layers(self.features(x))
