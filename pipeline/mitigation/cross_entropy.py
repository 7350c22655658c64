"""Per-sample cross-entropy that accepts the target formats MONAI classification bundles use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor

__all__ = ["per_sample_cross_entropy"]


def per_sample_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, shape ``(B,)``.

    Args:
        logits: ``(B, C)`` unnormalised scores, ``C >= 2``.
        target: class indices ``(B,)`` or ``(B, 1)`` (integer, or float holding integers), or
            class probabilities ``(B, C)`` (one-hot or soft).

    Raises:
        ValueError: when the shapes do not match one of these forms, a class index is outside
            ``[0, C)``, or probability rows are negative or do not sum to 1.
    """
    logits = convert_to_tensor(logits, track_meta=False)
    target = convert_to_tensor(target, track_meta=False, device=logits.device)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}.")
    batch, num_classes = logits.shape
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim == 1:
        if target.shape[0] != batch:
            raise ValueError(f"target has {target.shape[0]} entries but logits have batch size {batch}.")
        if target.is_floating_point():
            if not torch.equal(target, target.round()):
                raise ValueError("class-index target must hold integer values, got non-integer floats.")
        target = target.long()
        if batch and (target.min() < 0 or target.max() >= num_classes):
            raise ValueError(f"class-index target must lie in [0, {num_classes}), got {target.tolist()[:8]}.")
        return F.cross_entropy(logits, target, reduction="none")
    if tuple(target.shape) == (batch, num_classes):
        probs = target.to(logits.dtype)
        if batch and (
            (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-3)
        ):
            raise ValueError("probability target rows must be non-negative and sum to 1.")
        return F.cross_entropy(logits, probs, reduction="none")
    raise ValueError(
        f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
        f"use ({batch},), ({batch}, 1) class indices or ({batch}, {num_classes}) probabilities."
    )
