"""Faster copies of a frozen teacher: BatchNorm folded into convolutions, and a CPU TorchScript.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded
into that convolution's weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``). The BatchNorm is
replaced by an Identity, so module paths (the stage names that hooks use) are kept. Only pairs
whose order is certain are folded: consecutive children of an ``nn.Sequential``, and MONAI's
``Convolution`` blocks whose ADN ordering starts with the norm ("N..."). Others are left alone.
"""

from __future__ import annotations

import copy
import logging

import torch
from monai.networks.blocks import ADN, Convolution
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.networks.hooks import FeatureHooks

logger = logging.getLogger(__name__)

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def folded_copy(network: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``network`` with foldable BatchNorms folded; the input is untouched.

    The copy is also stored channels-last (2D or 3D, from its convolutions), which halved the
    frozen small_cnn's CPU forward time here; feed it :func:`channels_last` inputs.
    """
    folded = copy.deepcopy(network).eval().requires_grad_(False)
    for module in list(folded.modules()):
        if isinstance(module, Convolution):
            _fold_monai_block(module)
        elif isinstance(module, nn.Sequential):
            _fold_sequential(module)
    convs = [m for m in folded.modules() if isinstance(m, CONVOLUTIONS)]
    if convs and all(isinstance(m, nn.Conv2d) for m in convs):
        folded = folded.to(memory_format=torch.channels_last)
    elif convs and all(isinstance(m, nn.Conv3d) for m in convs):
        folded = folded.to(memory_format=torch.channels_last_3d)
    return folded


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, H, W[, D]) in the channels-last memory format (values unchanged)."""
    if images.ndim == 4:
        return images.contiguous(memory_format=torch.channels_last)
    if images.ndim == 5:
        return images.contiguous(memory_format=torch.channels_last_3d)
    return images


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, CONVOLUTIONS)
        and not conv.transposed
        and isinstance(norm, BATCH_NORMS)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _fold_monai_block(block: Convolution) -> None:
    conv, adn = getattr(block, "conv", None), getattr(block, "adn", None)
    if not isinstance(adn, ADN) or not hasattr(adn, "N"):
        return
    if next(iter(adn._modules)) != "N" or not _foldable(conv, adn.N):  # the norm must come first
        return
    block.conv = fuse_conv_bn_eval(conv, adn.N)
    adn.N = nn.Identity()


def _fold_sequential(sequence: nn.Sequential) -> None:
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if _foldable(conv, norm):
            sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
            sequence._modules[second] = nn.Identity()


class StageOutputs(nn.Module):
    """``network`` returning ``(logits, (stage feature maps...))`` in the order of ``stages``."""

    def __init__(self, network: nn.Module, stages: list[str]):
        super().__init__()
        self.network = network
        self.stages = list(stages)

    def forward(self, images: torch.Tensor):
        with FeatureHooks(self.network, self.stages, detach=True) as hooks:
            logits = self.network(images)
            return logits, tuple(hooks.features[s] for s in self.stages)


def frozen_script(network: nn.Module, stages: list[str], example: torch.Tensor, tolerance: float = 1e-4):
    """TorchScript of a frozen teacher's logits and stage features, optimized for CPU inference.

    Traces :class:`StageOutputs` on ``example``, then ``torch.jit.freeze`` and
    ``torch.jit.optimize_for_inference`` (oneDNN convolutions); measured here on the frozen
    small_cnn: about 1.5x faster than the folded eager copy on CPU. Returns None (the caller
    keeps the eager copy) when tracing fails or the script's outputs on ``example`` differ from
    the eager ones by more than ``tolerance`` relative to their scale.
    """
    wrapper = StageOutputs(network, stages).eval()
    try:
        with torch.no_grad():
            script = torch.jit.trace(wrapper, example, check_trace=False)
            script = torch.jit.optimize_for_inference(torch.jit.freeze(script.eval()))
            expected, got = wrapper(example), script(example)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use the eager teacher
        logger.warning("teacher kept in eager mode: TorchScript tracing failed (%s)", err)
        return None
    for name, a, b in zip(["logits", *stages], [expected[0], *expected[1]], [got[0], *got[1]]):
        scale = float(a.abs().max()) or 1.0
        if a.shape != b.shape or float((a - b).abs().max()) > tolerance * scale:
            logger.warning("teacher kept in eager mode: its TorchScript output '%s' differs from eager", name)
            return None
    return script
