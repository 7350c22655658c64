"""Draw one dermoscopy-like RGB image of a skin lesion; positives look malignant.

Malignant cues follow the ABCD rule of thumb: an irregular border and several colours (dark
brown, blue-grey, red). Both classes share random shape, size, colour and hair variation, and
``malignancy`` scales the class difference, so the task difficulty is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import draw, filters

_SKIN_LIGHT = np.array([0.93, 0.78, 0.68])
_SKIN_DARK = np.array([0.62, 0.44, 0.33])
_LESION_BROWN = np.array([0.55, 0.36, 0.25])
_VARIEGATION = np.array([[0.28, 0.17, 0.12], [0.45, 0.50, 0.62], [0.72, 0.32, 0.32]])
_HAIR = np.array([0.18, 0.12, 0.09])
_N_VERTICES = 180


@dataclass(frozen=True)
class DermoscopyDomain:
    """Parameters of the dermoscopy generator (one domain; the OOD test uses a shifted copy).

    Args:
        malignancy: strength of the malignant cues (extra border irregularity and colour
            variegation) added to positives; 0 makes the classes identical.
        noise_std: standard deviation of the additive pixel noise (per channel).
        contrast: gain around mid-grey (1 = unchanged).
        hair: mean number of hairs per image.
        vignette: darkening of the corners by the dermoscope's round field (0 = none).

    Raises:
        ValueError: a parameter is negative, or ``contrast`` is not positive.
    """

    malignancy: float = 0.8
    noise_std: float = 0.04
    contrast: float = 1.0
    hair: float = 2.0
    vignette: float = 0.5

    def __post_init__(self):
        for name in ("malignancy", "noise_std", "hair", "vignette"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.contrast <= 0:
            raise ValueError(f"contrast must be > 0, got {self.contrast!r}")


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-peak smooth random field."""
    field = filters.gaussian(rng.normal(size=(size, size)), sigma=sigma)
    return field / (np.abs(field).max() + 1e-12)


def draw_dermoscopy(rng: np.random.Generator, size: int, positive: bool, domain: DermoscopyDomain) -> np.ndarray:
    """Draw one dermoscopy image.

    Args:
        rng: the sample's own generator (all randomness of the sample comes from it).
        size: side length in pixels.
        positive: draw a malignant-looking lesion.
        domain: generator parameters.

    Returns:
        float32 array (size, size, 3) with values in [0, 1].
    """
    pixel = size / 64.0
    tone = rng.uniform(0.0, 1.0)
    skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK
    image = np.ones((size, size, 3)) * skin
    image += 0.05 * _smooth_field(rng, size, 8 * pixel)[..., None]

    # Lesion outline: a polygon whose radius has low-order harmonics (both classes) and, for
    # malignant lesions, extra higher-order ones (irregular, notched border).
    centre = size / 2 + rng.uniform(-0.1, 0.1, size=2) * size
    radius = rng.uniform(0.18, 0.3) * size
    theta = np.linspace(0, 2 * np.pi, _N_VERTICES, endpoint=False)
    profile = np.ones_like(theta)
    for k in range(2, 5):
        profile += rng.uniform(0.0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    irregular = rng.uniform(0.0, 0.4) + (domain.malignancy if positive else 0.0)
    for k in range(5, 12):
        profile += irregular * rng.uniform(0.0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.8, 1.2)
    rows = centre[0] + radius * profile * np.sin(theta) * stretch
    cols = centre[1] + radius * profile * np.cos(theta) / stretch
    mask = np.zeros((size, size))
    rr, cc = draw.polygon(rows, cols, shape=mask.shape)
    mask[rr, cc] = 1.0
    mask = filters.gaussian(mask, sigma=0.7 * pixel)

    lesion = _LESION_BROWN * rng.uniform(0.75, 1.1) + 0.06 * _smooth_field(rng, size, 3 * pixel)[..., None]
    variegation = rng.uniform(0.0, 0.35) + (domain.malignancy if positive else 0.0)
    for colour in _VARIEGATION:
        blob = np.clip(_smooth_field(rng, size, 4 * pixel), 0.0, None)
        weight = np.clip(variegation * rng.uniform(0.3, 1.0) * blob, 0.0, 1.0)[..., None]
        lesion = (1 - weight) * lesion + weight * colour
    image = (1 - mask[..., None]) * image + mask[..., None] * lesion

    for _ in range(rng.poisson(domain.hair)):
        ends = rng.uniform(0, size, size=(3, 2))
        rr, cc = draw.bezier_curve(*[int(v) for v in ends.ravel()], weight=1.0, shape=(size, size))
        image[rr, cc] = _HAIR

    yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) / (size / 2)
    image *= (1 - domain.vignette * np.clip(np.hypot(yy, xx) - 0.9, 0.0, None))[..., None]
    image = 0.5 + domain.contrast * (image - 0.5)
    image = image + rng.normal(0.0, domain.noise_std, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
