"""Weights trained elsewhere (ImageNet, MedicalNet) into the registry's networks: key names and input channels.

MONAI's ``ResNet`` names its tensors as torchvision's does (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``); MONAI's ``DenseNet`` puts each dense layer's norms and
convolutions under ``layers.`` (torchvision: ``denselayer1.norm1`` or, in its older files,
``denselayer1.norm.1``). MedicalNet's files carry DataParallel's ``module.`` prefix, which
:func:`pipeline.networks.load_checkpoint` removes anyway. :data:`KEY_MAPS` names these renamings;
docs/networks.md ("Pretrained weights") gives the settings that make the shapes match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

KEY_MAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "torchvision_resnet": (),
    "torchvision_densenet": ((r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.", r"\1.layers.\2\3."),),
    "medicalnet_resnet": ((r"^module\.", ""),),
}
"""Named renamings: (regular expression, replacement) pairs applied in order to every key."""


def rename_keys(state: Mapping[str, torch.Tensor], key_map: str | Sequence[Sequence[str]]) -> dict:
    """``state`` with every key renamed by ``key_map`` (a name of :data:`KEY_MAPS`, or pairs).

    Raises:
        ValueError: an unknown name, a pair that is not two strings, or two keys renamed to one.
    """
    if isinstance(key_map, str):
        if key_map not in KEY_MAPS:
            raise ValueError(f"key_map '{key_map}' is unknown; choose one of {sorted(KEY_MAPS)} or give [[pattern, replacement], ...]")
        rules = KEY_MAPS[key_map]
    else:
        rules = tuple(tuple(rule) for rule in key_map)
        if any(len(rule) != 2 or not all(isinstance(part, str) for part in rule) for rule in rules):
            raise ValueError(f"key_map must be [[pattern, replacement], ...] of strings, got {key_map!r}")
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in compiled:
            new = pattern.sub(replacement, new)
        if new in renamed:
            raise ValueError(f"key_map renames two checkpoint keys to '{new}' (one of them '{key}')")
        renamed[new] = value
    return renamed


def adapt_input_channels(
    saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[dict, tuple[str, ...]]:
    """Fit convolution kernels saved for another number of input channels (dimension 1).

    An RGB kernel loaded into a one-channel network is summed over its colours, so a grey image
    gives the response the RGB network had to that image repeated in each colour; a one-channel
    kernel loaded into a C-channel network is repeated and divided by C, the same rule backwards.
    Any other difference is left for the loader to report as a shape mismatch.

    Returns:
        The weights (adapted ones replaced) and the adapted keys.
    """
    adapted, keys = dict(saved), []
    for key, target in expected.items():
        source = saved.get(key)
        if source is None or source.ndim < 3 or source.shape == target.shape:
            continue
        if source.shape[:1] != target.shape[:1] or source.shape[2:] != target.shape[2:]:
            continue
        if target.shape[1] == 1:
            adapted[key] = source.sum(dim=1, keepdim=True)
        elif source.shape[1] == 1:
            adapted[key] = source.repeat_interleave(target.shape[1], dim=1) / target.shape[1]
        else:
            continue
        keys.append(key)
    return adapted, tuple(keys)
