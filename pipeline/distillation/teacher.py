"""The specialist teacher: a frozen network with fitted stage probes, saved and loaded together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.networks import build_network, unwrap_model
from pipeline.networks.checkpoint import read_checkpoint
from pipeline.networks.hooks import FeatureHooks
from pipeline.networks.probes import StageProbes


class ProbedNetwork(nn.Module):
    """A frozen network whose named stages feed trainable probes; returns (B, stages, classes) logits.

    Used to fit the teacher's probes with MONAI's SupervisedTrainer: the network stays in eval
    mode without gradients whatever ``train()`` is called with, only the probes learn.
    """

    def __init__(self, network: nn.Module, probes: StageProbes, stages: Sequence[str]):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.probes = probes
        self.stages = list(stages)

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with FeatureHooks(self.network, self.stages, detach=True) as hooks, torch.no_grad():
            self.network(images)
            features = dict(hooks.features)
        logits = self.probes(features)
        return torch.stack([logits[s] for s in self.stages], dim=1)


class StageProbeLoss(nn.Module):
    """Cross-entropy of every stage probe against the label, averaged over stages."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        batch, stages, classes = logits.shape
        target = target.reshape(batch).long()
        return F.cross_entropy(logits.reshape(batch * stages, classes), target.repeat_interleave(stages))


@dataclass
class TeacherSpec:
    """How to rebuild a teacher: registry name, build arguments and probed stages."""

    network_name: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    stages: list[str]
    network_options: dict = field(default_factory=dict)

    def build_network(self) -> nn.Module:
        return build_network(
            self.network_name, self.spatial_dims, self.in_channels, self.num_classes, **self.network_options
        )

    def build_probes(self) -> StageProbes:
        return StageProbes.from_network(
            self.network_name,
            self.stages,
            self.spatial_dims,
            self.in_channels,
            self.num_classes,
            **self.network_options,
        )


@dataclass
class Teacher:
    network: nn.Module
    probes: StageProbes
    spec: TeacherSpec


def save_teacher(path: str | Path, network: nn.Module, probes: nn.Module, spec: TeacherSpec) -> Path:
    """Save network, probes and spec in one checkpoint (loadable with ``weights_only=True``)."""
    content = {
        "network": unwrap_model(network).state_dict(),
        "probes": probes.state_dict(),
        "spec": {**spec.__dict__, "stages": list(spec.stages), "network_options": dict(spec.network_options)},
    }
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return Path(path)


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Teacher:
    """Rebuild a teacher saved by :func:`save_teacher`, frozen and in eval mode.

    Raises:
        ValueError: the file is missing or is not a teacher checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"teacher checkpoint '{path}' does not exist: train the teacher bundle first or set teacher_checkpoint"
        )
    content = read_checkpoint(path, "a teacher checkpoint written by the teacher bundle (network, probes, spec)")
    if not isinstance(content, dict) or not {"network", "probes", "spec"} <= set(content):
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(
            f"'{path}' is not a teacher checkpoint (expected keys network, probes, spec; got {keys})"
        )
    try:
        spec = TeacherSpec(**content["spec"])
        network, probes = spec.build_network(), spec.build_probes()
        network.load_state_dict(content["network"])
        probes.load_state_dict(content["probes"])
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"teacher checkpoint '{path}' does not fit its spec {content['spec']} "
            f"(expected a network and probes saved by save_teacher): {err}"
        ) from err
    device = torch.device(device)
    return Teacher(
        network.to(device).eval().requires_grad_(False), probes.to(device).eval().requires_grad_(False), spec
    )
