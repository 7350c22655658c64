"""Pair a teacher's stages with a student's by the spatial size of their feature maps (``stage_pairs: auto``)."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch

from pipeline.networks import build_network, network_stages
from pipeline.networks.hooks import FeatureHooks

logger = logging.getLogger(__name__)

AUTO = "auto"


def stage_sizes(
    network_name: str,
    image_size: Sequence[int],
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    options: Mapping | None = None,
) -> dict[str, tuple[int, ...]]:
    """Spatial size of each registry stage's output for an input of ``image_size``, in stage order.

    Measured with one forward pass of a freshly built network on CPU; torch's random state is
    restored afterwards, so the networks built later in a run get the same weights as without it.

    Raises:
        ValueError: ``image_size`` does not have ``spatial_dims`` entries, or (from the registry)
            an unknown network/option or an input too small for the network.
    """
    size = [int(s) for s in image_size]
    if len(size) != spatial_dims:
        raise ValueError(f"image_size {list(image_size)} must have {spatial_dims} entries (spatial_dims)")
    options = dict(options or {})
    stages = list(network_stages(network_name, spatial_dims, in_channels, num_classes, **options))
    with torch.random.fork_rng(devices=[]):
        network = build_network(network_name, spatial_dims, in_channels, num_classes, **options).eval()
    with FeatureHooks(network, stages, detach=True) as hooks, torch.no_grad():
        network(torch.zeros(1, in_channels, *size))
        return {stage: tuple(hooks.features[stage].shape[2:]) for stage in stages}


def pair_by_size(
    student_sizes: Mapping[str, tuple[int, ...]], teacher_sizes: Mapping[str, tuple[int, ...]]
) -> list[list[str]]:
    """``[[student stage, teacher stage], ...]``: each teacher stage, in order, with the first unpaired
    student stage of the same spatial size; stages without a partner are left out.

    The same network on both sides gives the identity pairing.

    Raises:
        ValueError: no stage pairs (the message lists both networks' stage sizes).
    """
    free = list(student_sizes)
    pairs = []
    for teacher_stage, size in teacher_sizes.items():
        match = next((s for s in free if tuple(student_sizes[s]) == tuple(size)), None)
        if match is not None:
            free.remove(match)
            pairs.append([match, teacher_stage])
    if not pairs:
        raise ValueError(
            "stage_pairs: auto found no student stage with the spatial size of a teacher stage "
            f"(student {dict(student_sizes)}, teacher {dict(teacher_sizes)}); "
            "give stage_pairs as [[student stage, teacher stage], ...]"
        )
    return pairs


def auto_stage_pairs(
    student_network: str,
    teacher_network: str,
    teacher_stages: Sequence[str],
    image_size: Sequence[int],
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    student_options: Mapping | None = None,
    teacher_options: Mapping | None = None,
) -> list[list[str]]:
    """The pairs of :func:`pair_by_size` for two registry networks on ``image_size`` inputs, logged.

    Args:
        teacher_stages: the teacher stages that may be paired (e.g. those with a fitted probe).
    """
    student = stage_sizes(
        student_network, image_size, spatial_dims, in_channels, num_classes, student_options
    )
    teacher = stage_sizes(
        teacher_network, image_size, spatial_dims, in_channels, num_classes, teacher_options
    )
    pairs = pair_by_size(student, {s: teacher[s] for s in teacher if s in teacher_stages})
    logger.info(
        "stage_pairs: auto pairs %s (student %s, teacher %s, spatial sizes at %s)",
        pairs, student_network, teacher_network, list(image_size),
    )  # fmt: skip
    return pairs
