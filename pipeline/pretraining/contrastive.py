"""SimCLR-style contrastive model and loss around a registry network, and saving its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.losses import ContrastiveLoss
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.networks import stages_of, unwrap_model
from pipeline.networks.arguments import check_positive_int
from pipeline.networks.hooks import FeatureHooks


class ContrastiveModel(nn.Module):
    """A registry network's trunk up to one stage, global average pooling and an MLP projection head.

    ``forward`` runs the network (its classifier output is discarded), takes the output of
    ``stage`` with :class:`~pipeline.networks.hooks.FeatureHooks`, averages it over the
    spatial axes (2D or 3D) and projects it: ``(N, projection_dim)``. The network is trained in
    place; save it with :func:`save_network_weights`, the head is only for pretraining.

    Args:
        network: a network from :func:`pipeline.networks.build_network` (possibly DP/DDP-wrapped).
        stage: the stage whose features are projected; default the network's last stage.
        projection_dim: output size of the projection head.
        hidden_dim: hidden size of the head; default the stage's channel count.

    Raises:
        ValueError: for a network not from the registry, an unknown stage, or sizes < 1.
    """

    def __init__(
        self,
        network: nn.Module,
        stage: str | None = None,
        projection_dim: int = 64,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        stages = stages_of(network)
        if stages is None:
            raise ValueError(
                f"network must come from pipeline.networks.build_network (its stages size the head), "
                f"got {type(unwrap_model(network)).__name__}"
            )
        stage = next(reversed(stages)) if stage is None else stage
        if stage not in stages:
            raise ValueError(f"stage {stage!r} is not a stage of the network; its stages: {list(stages)}")
        hidden_dim = stages[stage] if hidden_dim is None else hidden_dim
        for name, value in (("projection_dim", projection_dim), ("hidden_dim", hidden_dim)):
            check_positive_int(value, name)
        self.network = network
        self.stage = stage
        self.head = nn.Sequential(
            nn.Linear(stages[stage], hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, projection_dim)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with FeatureHooks(self.network, [self.stage]) as hooks:
            self.network(images)
            features = hooks.features[self.stage]
        return self.head(features.flatten(2).mean(2))


class TwoViewContrastiveLoss(nn.Module):
    """NT-Xent (MONAI's ``ContrastiveLoss``) between the two halves of a batch of projections.

    The first half holds view 1 of B images and the second half view 2 of the same images, in
    the same order (as :class:`~pipeline.pretraining.TwoViewPrepareBatch` builds the batch).

    Args:
        temperature: softmax temperature of NT-Xent, in (0, 1].

    Raises:
        ValueError: for a temperature outside (0, 1], or (when called) projections that are not
            ``(2B, D)`` or a target that is not None (pretraining uses no labels).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < temperature <= 1.0:
            raise ValueError(f"temperature must lie in (0, 1], got {temperature!r}")
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(self, projections: torch.Tensor, target: None = None) -> torch.Tensor:
        if target is not None:
            raise ValueError("contrastive pretraining uses no labels: target must be None")
        if projections.ndim != 2 or projections.shape[0] < 2 or projections.shape[0] % 2:
            raise ValueError(
                f"projections must be (2B, D) with both views of B >= 1 images, got {tuple(projections.shape)}"
            )
        view_1, view_2 = projections.chunk(2)
        return self.loss(view_1, view_2)


def save_network_weights(path: str | Path, network: nn.Module) -> Path:
    """Save ``network``'s plain state dict (unwrapped from DP/DDP) to ``path`` atomically.

    The file loads with ``pipeline.networks.load_checkpoint`` (the teacher's ``init_checkpoint``).
    """
    with atomic_path(path) as tmp:
        torch.save(unwrap_model(network).state_dict(), tmp)
    return Path(path)
