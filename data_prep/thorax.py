"""Draw one chest-X-ray-like 2D thorax image; positives carry a faint Gaussian opacity in a lung."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import draw, filters

# Anatomy in normalised coordinates: u across (-1 left .. 1 right), v down (-1 top .. 1 bottom).
_BACKGROUND = 0.05
_SOFT_TISSUE = 0.45
_LUNG = 0.18
_MEDIASTINUM = 0.55
_SPINE = 0.62
_RIB = 0.10
_N_RIBS = 7


@dataclass(frozen=True)
class ThoraxDomain:
    """Parameters of the thorax generator (one domain; the OOD test uses a shifted copy).

    Args:
        opacity_amplitude: peak added intensity of the finding (images are in [0, 1]); small
            values make the finding subtle so that a shortcut can win.
        opacity_sigma: Gaussian width of the finding as a fraction of the image size.
        noise_std: standard deviation of the additive pixel noise.
        contrast: gain around mid-grey applied to the anatomy (1 = unchanged).
        pose_jitter: scale of the random rotation (+-8 degrees at 1) and shift (+-4 % at 1).

    Raises:
        ValueError: a parameter is negative (or ``contrast``/``opacity_sigma`` is not positive).
    """

    opacity_amplitude: float = 0.06
    opacity_sigma: float = 0.09
    noise_std: float = 0.08
    contrast: float = 1.0
    pose_jitter: float = 1.0

    def __post_init__(self):
        for name in ("opacity_amplitude", "noise_std", "pose_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("contrast", "opacity_sigma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class _Pose:
    """Maps normalised anatomy coordinates to pixel coordinates (row, col) under a random pose."""

    def __init__(self, rng: np.random.Generator, size: int, jitter: float):
        self.angle = np.deg2rad(rng.uniform(-8.0, 8.0) * jitter)
        self.scale = 1.0 + rng.uniform(-0.08, 0.08)
        self.shift = rng.uniform(-0.04, 0.04, size=2) * size * jitter
        self.half = size / 2.0

    def __call__(self, u: float, v: float) -> tuple[float, float]:
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x = self.scale * self.half * (cos * u - sin * v)
        y = self.scale * self.half * (sin * u + cos * v)
        return self.half + y + self.shift[0], self.half + x + self.shift[1]

    def normalised_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised coordinates (u, v) of every pixel centre (inverse of the pose)."""
        rows, cols = np.mgrid[:size, :size].astype(float)
        y = (rows - self.half - self.shift[0]) / (self.scale * self.half)
        x = (cols - self.half - self.shift[1]) / (self.scale * self.half)
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return cos * x + sin * y, -sin * x + cos * y

    def radius(self, r: float) -> float:
        return self.scale * self.half * r


def _fill_ellipse(image, pose, centre, radii, value, rotation_deg=0.0):
    row, col = pose(*centre)
    rr, cc = draw.ellipse(
        row, col, pose.radius(radii[1]), pose.radius(radii[0]), shape=image.shape,
        rotation=-(pose.angle + np.deg2rad(rotation_deg)),
    )
    image[rr, cc] = value
    return rr, cc


def draw_thorax(rng: np.random.Generator, size: int, positive: bool, domain: ThoraxDomain) -> np.ndarray:
    """Draw one thorax image.

    Args:
        rng: the sample's own generator (all randomness of the sample comes from it).
        size: side length in pixels.
        positive: add the finding (a faint Gaussian opacity inside one lung field).
        domain: generator parameters.

    Returns:
        float32 array (size, size) with values in [0, 1].
    """
    image = np.full((size, size), _BACKGROUND)
    pose = _Pose(rng, size, domain.pose_jitter)
    width = rng.uniform(0.85, 1.0)
    _fill_ellipse(image, pose, (0.0, 0.05), (0.92 * width, 0.97), _SOFT_TISSUE)
    lung_masks = []
    lung_height = rng.uniform(0.5, 0.62)
    for side in (-1.0, 1.0):
        centre = (side * rng.uniform(0.36, 0.44) * width, rng.uniform(-0.12, -0.02))
        radii = (rng.uniform(0.25, 0.32) * width, lung_height * rng.uniform(0.95, 1.05))
        mask = np.zeros_like(image, dtype=bool)
        rr, cc = _fill_ellipse(image, pose, centre, radii, _LUNG, rotation_deg=side * rng.uniform(2, 8))
        mask[rr, cc] = True
        lung_masks.append(mask)
    _fill_ellipse(image, pose, (0.0, -0.2), (0.12, 0.6), _MEDIASTINUM)
    heart = _fill_ellipse(image, pose, (rng.uniform(0.08, 0.18), 0.3), (rng.uniform(0.26, 0.34), 0.24), _MEDIASTINUM)
    for mask in lung_masks:
        mask[heart] = False
    _fill_ellipse(image, pose, (0.0, 0.0), (0.06, 1.0), _SPINE)

    u, v = pose.normalised_grid(size)
    ribs = np.zeros_like(image)
    rib_gap = rng.uniform(0.14, 0.17)
    lateral = np.clip((np.abs(u) - 0.08) / (0.8 * width), 0.0, None)
    for k in range(_N_RIBS):
        centre_line = -0.72 + k * rib_gap - 0.08 * lateral + 0.45 * lateral**2
        ribs += np.exp(-((v - centre_line) ** 2) / (2 * 0.03**2)) * (lateral > 0) * (lateral < 1)
    pixel = size / 64.0
    image = filters.gaussian(image + _RIB * np.minimum(ribs, 1.0), sigma=0.8 * pixel)
    image = 0.5 + domain.contrast * (image - 0.5)

    if positive:
        lung = lung_masks[int(rng.integers(2))]
        rows, cols = np.nonzero(lung)
        pick = int(rng.integers(len(rows)))
        sigma = domain.opacity_sigma * size * rng.uniform(0.8, 1.2)
        yy, xx = np.mgrid[:size, :size]
        image = image + domain.opacity_amplitude * np.exp(
            -((yy - rows[pick]) ** 2 + (xx - cols[pick]) ** 2) / (2 * sigma**2)
        )
    image = image + rng.normal(0.0, domain.noise_std, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
