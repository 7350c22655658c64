"""Where a model looks: occlusion sensitivity averaged per class, and its share per 3x3 region.

For a few images of each class (the true class where labelled, else the predicted one), the
occlusion map of :func:`pipeline.evaluation.saliency.saliency_maps` (MONAI's
``OcclusionSensitivity``: the drop of the class's probability when a box around each pixel is
occluded) is computed over a coarse grid of non-overlapping boxes (an eighth of the smallest
side in 2D, a quarter in 3D) and averaged. A class whose evidence sits in one corner of the
image, away from where a finding can be, points at a localized shortcut.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.audit.candidates import REGIONS
from pipeline.audit.data import UNLABELLED, AuditImages
from pipeline.evaluation.saliency import saliency_maps


def mask_size(spatial_shape) -> int:
    """Side of the occluding boxes: an eighth of the smallest side in 2D, a quarter in 3D (a coarse grid)."""
    return max(1, min(spatial_shape) // (8 if len(spatial_shape) == 2 else 4))


def class_occlusion_maps(
    network: nn.Module, data: AuditImages, without: np.ndarray, per_class: int = 24, progress: bool = True
) -> dict[str, np.ndarray]:
    """Mean occlusion map (spatial shape) of each class over up to ``per_class`` of its images.

    Args:
        without: class-1 probabilities of ``data`` (classes of unlabelled images are predicted).

    Returns:
        ``{"0": map, "1": map}`` for the classes present; positive = the region supports that class.
    """
    classes = np.where(data.labels == UNLABELLED, (without >= 0.5).astype(int), data.labels)
    shape = tuple(data.images.shape[2:])
    options = {"mask_size": mask_size(shape), "overlap": 0.0, "n_batch": 64}
    maps = {}
    for cls in (0, 1):
        index = np.flatnonzero(classes == cls)[:per_class]
        if index.size == 0:
            continue
        images = data.images[torch.as_tensor(index)]
        parts = [
            saliency_maps(
                network, images[i : i + 1], method="occlusion", class_idx=cls, occlusion_kwargs=options
            )
            for i in tqdm(
                range(len(index)), desc=f"occlusion, class {cls}", unit="image", disable=not progress
            )
        ]
        maps[str(cls)] = torch.cat(parts).mean(dim=0)[0].cpu().numpy()
    return maps


def region_shares(evidence: np.ndarray) -> dict[str, float]:
    """Share of a map's positive evidence that lies in each cell of the 3x3 grid (:data:`REGIONS`)."""
    positive = np.clip(evidence, 0, None)
    total = float(positive.sum())
    rows = np.array_split(np.arange(evidence.shape[0]), 3)
    cols = np.array_split(np.arange(evidence.shape[1]), 3)
    shares = {}
    for k, region in enumerate(REGIONS):
        r, c = divmod(k, 3)
        cell = positive[rows[r][0] : rows[r][-1] + 1, cols[c][0] : cols[c][-1] + 1]
        shares[region] = float(cell.sum()) / total if total > 0 else 0.0
    return shares
