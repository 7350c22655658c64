"""Augmentation-based mitigation: generic intensity/occlusion augmentations and mixup.

Neither needs bias labels. :func:`artifact_agnostic_augmentations` returns MONAI dictionary
transforms to append to a training chain; :class:`MixupPrepareBatch` mixes whole batches
inside the engine (``SupervisedTrainer(prepare_batch=...)``) with MONAI's ``MixUp`` and
returns soft targets for :class:`~pipeline.mitigation.SoftTargetCrossEntropyLoss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.transforms import (
    MapTransform,
    MixUp,
    RandAdjustContrastd,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
)
from monai.utils import convert_to_tensor

__all__ = ["MixupPrepareBatch", "artifact_agnostic_augmentations", "decorrelating_artifact_rates"]


def _check_range(name: str, value: Sequence[float], low: float) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] < low or pair[1] < pair[0]:
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max, got {value}.")
    return pair


def artifact_agnostic_augmentations(
    spatial_dims: int,
    keys: str | Sequence[str] = "image",
    noise_std: float | None = 0.1,
    contrast: tuple[float, float] | None = (0.7, 1.5),
    blur_sigma: tuple[float, float] | None = (0.25, 1.5),
    cutout_size: int | Sequence[int] | None = 16,
    cutout_holes: int = 4,
    flip_axes: Sequence[int] | None = None,
    prob: float = 0.5,
) -> list[MapTransform]:
    """Random augmentations that perturb intensity, sharpness and local content of every image.

    Appended to the training chain after intensity normalisation (and after the shortcut
    injection, so the artifact is perturbed too). In a bundle:
    ``"$@preprocessing + pipeline.mitigation.artifact_agnostic_augmentations(2)"``. Each
    component set to ``None`` is left out. Seed them through the enclosing ``Compose``.

    Args:
        spatial_dims: 2 or 3.
        keys: image key(s).
        noise_std: upper bound of the Gaussian noise std (``RandGaussianNoised``).
        contrast: gamma range of ``RandAdjustContrastd``.
        blur_sigma: sigma range of ``RandGaussianSmoothd`` (same on every axis).
        cutout_size: side of each dropped box in voxels (int or one per axis), ``RandCoarseDropoutd``.
        cutout_holes: number of dropped boxes.
        flip_axes: spatial axes flipped independently (``RandFlipd`` each); off by default since
            left/right carries anatomy in many modalities.
        prob: probability of applying each transform.

    Raises:
        ValueError: for ``spatial_dims`` not 2/3, ``prob`` outside [0, 1], negative ranges/sizes,
            or a flip axis outside ``[0, spatial_dims)``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must lie in [0, 1], got {prob}.")
    transforms: list[MapTransform] = []
    if noise_std is not None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
        transforms.append(RandGaussianNoised(keys, prob=prob, std=noise_std))
    if contrast is not None:
        transforms.append(
            RandAdjustContrastd(keys, prob=prob, gamma=_check_range("contrast", contrast, 1e-6))
        )
    if blur_sigma is not None:
        sigma = _check_range("blur_sigma", blur_sigma, 0.0)
        transforms.append(RandGaussianSmoothd(keys, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=prob))
    if cutout_size is not None:
        size = (
            [int(cutout_size)] * spatial_dims if np.ndim(cutout_size) == 0 else [int(s) for s in cutout_size]
        )
        if len(size) != spatial_dims or min(size) < 1:
            raise ValueError(
                f"cutout_size must be a positive int or {spatial_dims} of them, got {cutout_size}."
            )
        if cutout_holes < 1:
            raise ValueError(f"cutout_holes must be >= 1, got {cutout_holes}.")
        transforms.append(
            RandCoarseDropoutd(keys, holes=cutout_holes, spatial_size=size, fill_value=0.0, prob=prob)
        )
    for axis in flip_axes or ():
        if not 0 <= axis < spatial_dims:
            raise ValueError(f"flip_axes entries must lie in [0, {spatial_dims}), got {axis}.")
        transforms.append(RandFlipd(keys, prob=prob, spatial_axis=axis))
    return transforms


def decorrelating_artifact_rates(bias_rates: Sequence[float], target: float | None = None) -> list[float]:
    """Per-class rates of a second, independent injection of the known artifact on top of the
    biased one, so that every class ends up with the artifact at the same probability ``target``.

    A sample of class ``c`` has the artifact after both injections with probability
    ``b_c + (1 - b_c) * r_c``; solving for ``target`` gives ``r_c = (target - b_c) / (1 - b_c)``.
    Equal rates such as ``[0.5, 0.5]`` weaken the correlation but do not remove it.

    Args:
        bias_rates: artifact probability per class of the biased injection, in [0, 1].
        target: final artifact probability of every class; default ``max(bias_rates)``. A second
            injection only adds artifacts, so it must be in ``[max(bias_rates), 1]``.

    Raises:
        ValueError: for empty rates, rates outside [0, 1], or ``target`` outside the allowed range.
    """
    rates = [float(r) for r in bias_rates]
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise ValueError(
            f"bias_rates must be probabilities in [0, 1], one per class, got {list(bias_rates)}."
        )
    target = max(rates) if target is None else float(target)
    if not max(rates) <= target <= 1.0:
        raise ValueError(f"target must lie in [max(bias_rates)={max(rates)}, 1], got {target}.")
    return [0.0 if r == 1.0 else (target - r) / (1.0 - r) for r in rates]


class MixupPrepareBatch(PrepareBatch):
    """``prepare_batch`` for MONAI engines that applies mixup (Zhang et al., ICLR 2018).

    Images and one-hot labels of a batch are mixed with the same Beta(alpha, alpha) weights and
    permutation from ``monai.transforms.MixUp`` (on the CPU, where MixUp keeps its weights), then
    moved to ``device``. Returns ``(images, soft_targets)`` with
    ``soft_targets`` of shape ``(B, num_classes)``; train with
    :class:`~pipeline.mitigation.SoftTargetCrossEntropyLoss` (or ``torch.nn.CrossEntropyLoss``).
    Use it for the trainer only; the evaluator keeps the default ``prepare_batch``.

    Args:
        num_classes: number of classes of the integer labels.
        alpha: Beta distribution parameter (> 0).
        seed: seed of the mixing weights and pairings.
        image_key: batch key of the images.
        label_key: batch key of the labels (``(B,)``, ``(B, 1)`` indices or ``(B, C)`` one-hot).

    Raises:
        ValueError: for ``num_classes`` < 2, ``alpha`` <= 0, or a batch without the keys.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.4,
        seed: int = 0,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}.")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.image_key = image_key
        self.label_key = label_key
        self.R = np.random.RandomState(seed)

    def _soft_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2 and labels.shape[1] == self.num_classes:
            return labels.float()
        labels = labels.reshape(labels.shape[0], -1)
        if labels.shape[1] != 1:
            raise ValueError(
                f"{self.label_key!r} must be (B,), (B, 1) or (B, {self.num_classes}), "
                f"got {tuple(labels.shape)}."
            )
        index = labels[:, 0]
        if index.is_floating_point() and not torch.equal(index, index.round()):
            raise ValueError(f"{self.label_key!r} must hold integer class indices, got {index.tolist()[:8]}.")
        index = index.long()
        if index.numel() and (index.min() < 0 or index.max() >= self.num_classes):
            raise ValueError(
                f"{self.label_key!r} must lie in [0, {self.num_classes}), got {index.tolist()[:8]}."
            )
        return F.one_hot(index, self.num_classes).float()

    def __call__(
        self,
        batchdata: dict,
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for key in (self.image_key, self.label_key):
            if not isinstance(batchdata, dict) or key not in batchdata:
                found = (
                    sorted(map(str, batchdata)) if isinstance(batchdata, dict) else type(batchdata).__name__
                )
                raise ValueError(f"mixup needs batch key {key!r}; got {found}.")
        # MixUp keeps its mixing weights on the CPU, so mix there and move the result afterwards.
        images = convert_to_tensor(batchdata[self.image_key], device="cpu")
        targets = self._soft_labels(
            convert_to_tensor(batchdata[self.label_key], track_meta=False, device="cpu")
        )
        mixer = MixUp(batch_size=images.shape[0], alpha=self.alpha)
        mixer.set_random_state(state=self.R)
        mixed_images = mixer(images)
        # MixUp expects channel-first spatial data: view (B, C) targets as (B, C, 1, 1), same draw.
        mixed_targets = mixer(targets[..., None, None], randomize=False)[..., 0, 0]
        return default_prepare_batch(
            {"image": mixed_images, "label": mixed_targets}, device, non_blocking, **kwargs
        )
