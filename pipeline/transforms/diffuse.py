"""Diffuse shortcut artifacts: the whole image changes (noise, contrast, intensity, blur, bias field).

Each wraps the MONAI transform that already does the job, applied with probability 1 (the
label-conditioned decision belongs to :class:`pipeline.transforms.ShortcutInjection`). Random ones
draw from the artifact's own random state (``set_random_state``). 2D (C, H, W) and 3D (C, H, W, D).
Each has a dictionary twin (``GaussianNoiseArtifactd`` ...) taking ``keys`` and ``allow_missing_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    AdjustContrast,
    GaussianSmooth,
    RandBiasField,
    RandGaussianNoise,
    Randomizable,
    RandRicianNoise,
    ShiftIntensity,
    Transform,
)
from monai.utils import convert_to_tensor

from pipeline.transforms.base import Artifact, ArtifactDict, check_number


class DiffuseArtifact(Artifact):
    """Base of diffuse artifacts: applies a MONAI intensity transform to the whole image.

    Args:
        transform: the MONAI transform; a randomizable one shares this artifact's random state.
    """

    def __init__(self, transform: Transform | None = None) -> None:
        super().__init__()
        self.transform = transform

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(state=self.R)  # draw from this artifact's (seeded) state
        return convert_to_tensor(self.transform(x), dtype=x.dtype, device=x.device, track_meta=False)


class GaussianNoiseArtifact(DiffuseArtifact):
    """Additive Gaussian noise (MONAI RandGaussianNoise with a fixed std).

    Args:
        std: noise standard deviation (>= 0), in image units.
        mean: noise mean.

    Raises:
        ValueError: for a negative or non-finite std or a non-finite mean.
    """

    def __init__(self, std: float = 0.1, mean: float = 0.0) -> None:
        self.std = check_number(std, "std", 0.0)
        self.mean = check_number(mean, "mean")
        super().__init__(RandGaussianNoise(prob=1.0, mean=self.mean, std=self.std, sample_std=False, dtype=None))


class RicianNoiseArtifact(DiffuseArtifact):
    """Rician noise, as in magnitude MR images: sqrt((x + n1)^2 + n2^2) (MONAI RandRicianNoise).

    Args:
        std: standard deviation (>= 0) of the two Gaussian fields n1, n2, in image units.

    Raises:
        ValueError: for a negative or non-finite std.
    """

    def __init__(self, std: float = 0.1) -> None:
        self.std = check_number(std, "std", 0.0)
        super().__init__(RandRicianNoise(prob=1.0, std=self.std, sample_std=False, dtype=None))


class ContrastArtifact(DiffuseArtifact):
    """Global contrast change about a pivot: out = pivot + factor * (x - pivot) (SimBA uses 1.2).

    Args:
        factor: contrast factor (> 0); above 1 stretches, below 1 flattens.
        pivot: "mean", "median" (lower middle value) of the whole image, or a number.

    Raises:
        ValueError: for a non-positive factor or an unknown pivot.
    """

    def __init__(self, factor: float = 1.2, pivot: str | float = "mean") -> None:
        super().__init__()
        self.factor = check_number(factor, "factor")
        if self.factor <= 0:
            raise ValueError(f"factor must be positive, got {factor!r}.")
        if not isinstance(pivot, str):
            pivot = check_number(pivot, "pivot")
        elif pivot not in ("mean", "median"):
            raise ValueError(f"pivot={pivot!r} is unknown; use 'mean', 'median' or a number.")
        self.pivot = pivot

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.pivot == "mean":
            pivot = x.mean()
        elif self.pivot == "median":
            pivot = x.median()
        else:
            pivot = torch.as_tensor(self.pivot, dtype=x.dtype, device=x.device)
        return pivot + self.factor * (x - pivot)


class IntensityShiftArtifact(DiffuseArtifact):
    """Global intensity offset: out = x + offset (MONAI ShiftIntensity).

    Args:
        offset: value added to every pixel.

    Raises:
        ValueError: for a non-finite offset.
    """

    def __init__(self, offset: float = 0.1) -> None:
        self.offset = check_number(offset, "offset")
        super().__init__(ShiftIntensity(offset=self.offset))


class GammaArtifact(DiffuseArtifact):
    """Gamma curve within the image's range: out = ((x - min) / range) ** gamma * range + min
    (MONAI AdjustContrast).

    Args:
        gamma: exponent (> 0); above 1 darkens mid-tones, below 1 brightens them.

    Raises:
        ValueError: for a non-positive gamma.
    """

    def __init__(self, gamma: float = 1.5) -> None:
        self.gamma = check_number(gamma, "gamma")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}.")
        super().__init__(AdjustContrast(gamma=self.gamma))


class BlurArtifact(DiffuseArtifact):
    """Gaussian blur (MONAI GaussianSmooth).

    Args:
        sigma: standard deviation in pixels (> 0), scalar or one per spatial axis.

    Raises:
        ValueError: for a non-positive sigma.
    """

    def __init__(self, sigma: float | Sequence[float] = 1.0) -> None:
        if isinstance(sigma, Sequence) and not isinstance(sigma, str):
            self.sigma = tuple(check_number(s, "sigma") for s in sigma)
        else:
            self.sigma = check_number(sigma, "sigma")
        if min(self.sigma if isinstance(self.sigma, tuple) else (self.sigma,), default=0.0) <= 0:
            raise ValueError(f"sigma must be positive (pixels), scalar or one per spatial axis; got {sigma!r}.")
        super().__init__(GaussianSmooth(sigma=self.sigma))


class BiasFieldArtifact(DiffuseArtifact):
    """Smooth multiplicative bias field: out = x * exp(field), field a Legendre polynomial with random
    coefficients (MONAI RandBiasField).

    Args:
        degree: polynomial degree (>= 1).
        coeff_range: (low, high) range of the uniformly drawn coefficients.

    Raises:
        ValueError: for a degree below 1 or a coeff_range that is not an ordered pair.
    """

    def __init__(self, degree: int = 3, coeff_range: Sequence[float] = (0.0, 0.1)) -> None:
        if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, (int, np.integer)) or degree < 1:
            raise ValueError(f"degree must be an integer >= 1, got {degree!r}.")
        if not isinstance(coeff_range, Sequence) or len(coeff_range) != 2:
            raise ValueError(f"coeff_range must be a pair (low, high), got {coeff_range!r}.")
        low, high = (check_number(v, "coeff_range") for v in coeff_range)
        if low > high:
            raise ValueError(f"coeff_range must be ordered (low <= high), got {list(coeff_range)!r}.")
        self.degree, self.coeff_range = int(degree), (low, high)
        super().__init__(RandBiasField(degree=self.degree, coeff_range=self.coeff_range, prob=1.0, dtype=None))


class GaussianNoiseArtifactd(ArtifactDict):
    """Dictionary twin of :class:`GaussianNoiseArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = GaussianNoiseArtifact


class RicianNoiseArtifactd(ArtifactDict):
    """Dictionary twin of :class:`RicianNoiseArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = RicianNoiseArtifact


class ContrastArtifactd(ArtifactDict):
    """Dictionary twin of :class:`ContrastArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = ContrastArtifact


class IntensityShiftArtifactd(ArtifactDict):
    """Dictionary twin of :class:`IntensityShiftArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = IntensityShiftArtifact


class GammaArtifactd(ArtifactDict):
    """Dictionary twin of :class:`GammaArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = GammaArtifact


class BlurArtifactd(ArtifactDict):
    """Dictionary twin of :class:`BlurArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = BlurArtifact


class BiasFieldArtifactd(ArtifactDict):
    """Dictionary twin of :class:`BiasFieldArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = BiasFieldArtifact

