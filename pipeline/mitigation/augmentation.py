"""Augmentation-based mitigation: generic intensity/occlusion augmentations (no bias labels
needed), and the added-artifact rates that decorrelate a known artifact from the label.

:func:`artifact_agnostic_augmentations` returns MONAI dictionary transforms to append to a
training chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
)

__all__ = ["artifact_agnostic_augmentations", "decorrelating_artifact_rates"]


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
