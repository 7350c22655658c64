"""Localized shortcut artifacts: only pixels inside the artifact's box change.

Every artifact takes the box parameters of :class:`LocalizedArtifact` (``size``, ``position``,
``margin``, ``region``; see :mod:`pipeline.transforms.geometry`) and works on 2D (C, H, W) and 3D
(C, H, W, D) images. The painted ones also take ``intensity``, ``intensity_mode`` and ``blend``.
Each has a dictionary twin (``PatchArtifactd`` ...) taking ``keys`` and ``allow_missing_keys``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from monai.transforms import Resample
from monai.utils import convert_to_tensor

from pipeline.transforms.base import Artifact, ArtifactDict, check_choice, check_number
from pipeline.transforms.font import GLYPH_HEIGHT, check_text, text_bitmap
from pipeline.transforms.geometry import (
    box_slices,
    check_margin,
    check_position,
    check_region,
    check_size,
    resolve_size,
    resolve_start,
    spatial_shape,
)

INTENSITY_MODES = ("absolute", "relative")
BLENDS = ("replace", "add")


def _normalised_radius(box: tuple[int, ...]) -> np.ndarray:
    """Ellipsoidal radius over a box: 0 at its centre, 1 on the inscribed ellipse/ellipsoid."""
    axes = [(np.arange(b) - (b - 1) / 2) / (b / 2) for b in box]
    grids = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


class LocalizedArtifact(Artifact):
    """Base of localized artifacts: resolves the box, then lets the subclass draw into it.

    Args:
        size: box size: pixels (int) or fraction of the axis (float <= 1.0); scalar or per axis.
            On a volume, 2 entries give the in-plane size and a slab as thick as the smaller side.
        position: "top_left", "top_right", "bottom_left", "bottom_right", "centre"/"center" (first two
            spatial axes; centred in depth), start coordinates per spatial axis, or "random".
        margin: pixels between the box and the image border for named and random positions.
        region: for "random": [[start, stop], ...] per spatial axis (pixels or fractions) that the box
            must lie in; default the whole image.
        intensity: value painted (absolute) or fraction of the image range (relative).
        intensity_mode: "absolute", or "relative": value = min + intensity * (max - min) for "replace"
            and intensity * (max - min) for "add", with min/max of the whole image.
        blend: "replace" pixels by the value, or "add" the value to them.

    Raises:
        ValueError: for a bad size, position, margin, region, intensity, intensity_mode or blend; at call
            time for a box larger than the image or reaching out of it.
    """

    def __init__(
        self,
        size: Any = 0.1,
        position: Any = "top_left",
        margin: int = 0,
        region: Any = None,
        intensity: float = 1.0,
        intensity_mode: str = "relative",
        blend: str = "replace",
    ) -> None:
        super().__init__()
        self.size = check_size(size)
        self.position = check_position(position)
        self.margin = check_margin(margin)
        self.region = check_region(region)
        self.intensity = check_number(intensity, "intensity")
        self.intensity_mode = check_choice(intensity_mode, "intensity_mode", INTENSITY_MODES)
        self.blend = check_choice(blend, "blend", BLENDS)

    def region_of(self, img: Any) -> tuple[slice, ...]:
        """Index (all channels, then one slice per spatial axis) of the box the artifact occupies in `img`.

        A random position is drawn from ``self.R``: after ``set_random_state(seed=s)`` it is the box
        that the next call with that seed uses.

        Raises:
            ValueError: for a wrongly shaped image or a box that does not fit.
        """
        shape = spatial_shape(img)
        box = resolve_size(self.size, shape)
        return box_slices(resolve_start(self.position, box, shape, self.margin, self.region, self.R), box)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        index = self.region_of(x)
        out = x.clone()
        out[index] = self._render(x, index)
        return out

    def _level(self, x: torch.Tensor) -> Callable[[float], float]:
        """Maps an intensity parameter to the value painted (or added) for this image."""
        if self.intensity_mode == "absolute":
            return lambda value: value
        vmin, vmax = float(x.min()), float(x.max())
        if self.blend == "add":
            return lambda value: value * (vmax - vmin)
        return lambda value: vmin + value * (vmax - vmin)

    def _render(self, x: torch.Tensor, index: tuple[slice, ...]) -> torch.Tensor:
        """New content of the box: the pattern's target blended in with the pattern's weight."""
        box = tuple(s.stop - s.start for s in index[1:])
        weight, target = self._pattern(box, self._level(x))
        crop = x[index]
        w = torch.as_tensor(weight, dtype=x.dtype, device=x.device)
        t = torch.as_tensor(target, dtype=x.dtype, device=x.device)
        if self.blend == "add":
            return crop + w * t
        return torch.lerp(crop, t.expand_as(crop), w.expand_as(crop))

    def _pattern(self, box: tuple[int, ...], level: Callable[[float], float]) -> tuple[np.ndarray, Any]:
        """Weight in [0, 1] over the box and target value(s) (scalar or array of the box's shape)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _pattern.")


class PatchArtifact(LocalizedArtifact):
    """A filled square/rectangle (cube/cuboid in 3D) over the whole box.

    Args: see :class:`LocalizedArtifact`.
    """

    def _pattern(self, box, level):
        return np.ones(box), level(self.intensity)


class DiscArtifact(LocalizedArtifact):
    """A filled disc/ellipse (ball/ellipsoid in 3D) inscribed in the box.

    Args: see :class:`LocalizedArtifact`.
    """

    def _pattern(self, box, level):
        return (_normalised_radius(box) <= 1.0).astype(float), level(self.intensity)


# least height of shrunk text (rows of the 7-row font kept) when the box is smaller than the font
MIN_TEXT_ROWS = 3


class TextTagArtifact(LocalizedArtifact):
    """Text burnt into the image, like the "L"/"R"/"PORTABLE" markers on radiographs.

    The 5x7 bitmap font is scaled by the largest whole factor that fits the box's first two axes and
    centred in it; a box smaller than the font keeps evenly spaced rows and columns of it (at least
    :data:`MIN_TEXT_ROWS` rows). In 3D the text fills every slice of the box's slab.

    Args:
        text: characters A-Z, 0-9, space and - . : / + (lower case is upper-cased).
        size: box size (default 0.25); text of n characters is 7 x (6n - 1) pixels at full size
            and needs at least 3 x (18n - 3) / 7 pixels.
        others: see :class:`LocalizedArtifact`.

    Raises:
        ValueError: for an empty text or characters without a glyph; at call time for a box too small.
    """

    def __init__(self, text: str = "L", size: Any = 0.25, position: Any = "top_left", **kwargs: Any) -> None:
        super().__init__(size=size, position=position, **kwargs)
        self.text = check_text(text)

    def _pattern(self, box, level):
        bitmap = text_bitmap(self.text)
        scale = min(box[0] / GLYPH_HEIGHT, box[1] / bitmap.shape[1])
        if scale >= 1:
            glyphs = np.kron(bitmap, np.ones((int(scale), int(scale)), dtype=bool))
        else:  # a box narrower than the font: every k-th row and column (nearest), at least MIN_TEXT_ROWS high
            rows, cols = round(bitmap.shape[0] * scale), round(bitmap.shape[1] * scale)
            if rows < MIN_TEXT_ROWS:
                needed = math.ceil(MIN_TEXT_ROWS / GLYPH_HEIGHT * bitmap.shape[1])
                raise ValueError(
                    f"size={box} pixels is too small for text={self.text!r}: it needs at least "
                    f"{MIN_TEXT_ROWS} x {needed} pixels on the first two spatial axes "
                    f"({GLYPH_HEIGHT} x {bitmap.shape[1]} for the font at full size)."
                )
            pick = [np.linspace(0, n - 1, m).round().astype(int) for n, m in zip(bitmap.shape, (rows, cols))]
            glyphs = bitmap[np.ix_(*pick)]
        top, left = ((b - g) // 2 for b, g in zip(box[:2], glyphs.shape))
        mask = np.zeros(box[:2])
        mask[top : top + glyphs.shape[0], left : left + glyphs.shape[1]] = glyphs
        if len(box) == 3:
            mask = np.repeat(mask[..., None], box[2], axis=2)
        return mask, level(self.intensity)


class RulerArtifact(LocalizedArtifact):
    """A ruler: a bar filling the box with tick marks every `period` pixels along its long axis.

    Ticks grow from the bar's top (or left) edge: half the bar's thickness, every fifth one 80 %.

    Args:
        period: pixels between ticks (>= 2).
        tick_intensity: value of the ticks, interpreted like `intensity` (default 0: the image minimum
            in relative mode).
        orientation: "horizontal" (long axis = second spatial axis), "vertical" (first), or "auto"
            (the box's longer in-plane side).
        size: box size (default (0.08, 0.5)).
        others: see :class:`LocalizedArtifact`.

    Raises:
        ValueError: for a bad period, tick_intensity or orientation.
    """

    def __init__(
        self,
        period: int = 4,
        tick_intensity: float = 0.0,
        orientation: str = "auto",
        size: Any = (0.08, 0.5),
        position: Any = "bottom_left",
        **kwargs: Any,
    ) -> None:
        super().__init__(size=size, position=position, **kwargs)
        if isinstance(period, (bool, np.bool_)) or not isinstance(period, (int, np.integer)) or period < 2:
            raise ValueError(f"period must be an integer >= 2 (pixels between ticks), got {period!r}.")
        self.period = int(period)
        self.tick_intensity = check_number(tick_intensity, "tick_intensity")
        self.orientation = check_choice(orientation, "orientation", ("auto", "horizontal", "vertical"))

    def _pattern(self, box, level):
        horizontal = self.orientation == "horizontal" or (self.orientation == "auto" and box[1] >= box[0])
        thickness, length = (box[0], box[1]) if horizontal else (box[1], box[0])
        ticks = np.zeros((thickness, length), dtype=bool)
        width = max(1, self.period // 4)
        for k, pos in enumerate(range(self.period // 2, length, self.period)):
            extent = math.ceil(thickness * (0.8 if k % 5 == 0 else 0.5))
            ticks[:extent, pos : pos + width] = True
        if not horizontal:
            ticks = ticks.T
        if len(box) == 3:
            ticks = np.repeat(ticks[..., None], box[2], axis=2)
        target = np.where(ticks, level(self.tick_intensity), level(self.intensity))
        return np.ones(box), target


class LocalIntensityArtifact(LocalizedArtifact):
    """An intensity change in the ellipse/ellipsoid inscribed in the box, with a soft edge.

    The weight is 1 inside radius (1 - softness) and falls to 0 at the ellipse with a raised cosine.

    Args:
        intensity: change (default 0.2 of the image range, added).
        softness: fraction of the radius used for the soft edge, in [0, 1] (0: hard edge).
        blend: "add" (default) or "replace".
        others: see :class:`LocalizedArtifact` (position defaults to "centre", size to 0.3).

    Raises:
        ValueError: for softness outside [0, 1] and the base class's errors.
    """

    def __init__(
        self,
        intensity: float = 0.2,
        softness: float = 0.5,
        blend: str = "add",
        size: Any = 0.3,
        position: Any = "centre",
        **kwargs: Any,
    ) -> None:
        super().__init__(size=size, position=position, intensity=intensity, blend=blend, **kwargs)
        self.softness = check_number(softness, "softness", 0.0, 1.0)

    def _pattern(self, box, level):
        r = _normalised_radius(box)
        inner = 1.0 - self.softness
        if self.softness == 0:
            weight = (r <= 1.0).astype(float)
        else:
            ramp = np.clip((r - inner) / self.softness, 0.0, 1.0)
            weight = 0.5 * (1.0 + np.cos(np.pi * ramp))
            weight[r >= 1.0] = 0.0
        return weight, level(self.intensity)


# peak of r * (1 - r^2)^2 on [0, 1], reached at r = 1/sqrt(5): normalises the envelope to 1
_DEFORMATION_PEAK = (1 / math.sqrt(5)) * (1 - 1 / 5) ** 2
MAX_DEFORMATION = 0.25


class LocalDeformationArtifact(LocalizedArtifact):
    """A smooth local expansion (positive magnitude) or atrophy (negative) inside the box.

    SimBA's morphological bias: a radial displacement u(q) = magnitude * q * (1 - |q|^2)^2 / peak, in
    coordinates q normalised to the ellipse/ellipsoid inscribed in the box (|q| = 1 on it), zero
    outside it, peaking at |magnitude| times the box's half-size at |q| = 1/sqrt(5). The image is
    resampled (MONAI Resample, bilinear) at x - u(x); |magnitude| <= 0.25 keeps the map fold-free.

    Args:
        magnitude: peak displacement as a fraction of the box's half-size, in [-0.25, 0.25].
        size: box size (default 0.4).
        others: box parameters of :class:`LocalizedArtifact` (position defaults to "centre").

    Raises:
        ValueError: for a magnitude outside [-0.25, 0.25] and the box parameters' errors.
    """

    def __init__(
        self,
        magnitude: float = 0.2,
        size: Any = 0.4,
        position: Any = "centre",
        margin: int = 0,
        region: Any = None,
    ) -> None:
        super().__init__(size=size, position=position, margin=margin, region=region)
        self.magnitude = check_number(magnitude, "magnitude", -MAX_DEFORMATION, MAX_DEFORMATION)
        self._resample = Resample(mode="bilinear", padding_mode="border", norm_coords=True)

    def _render(self, x: torch.Tensor, index: tuple[slice, ...]) -> torch.Tensor:
        box = tuple(s.stop - s.start for s in index[1:])
        shape = x.shape[1:]
        half = [b / 2 for b in box]
        q = torch.meshgrid(
            *[(torch.arange(b, dtype=torch.float64) - (b - 1) / 2) / h for b, h in zip(box, half)], indexing="ij"
        )
        r2 = sum(qi**2 for qi in q)
        envelope = torch.where(r2 < 1, (1 - r2) ** 2, torch.zeros_like(r2)) * (self.magnitude / _DEFORMATION_PEAK)
        grid = [
            torch.arange(s.start, s.stop, dtype=torch.float64).reshape([-1 if a == i else 1 for a in range(len(box))])
            - qi * envelope * h  # sample x - u(x)
            - (n - 1) / 2  # Resample's centred coordinates
            for i, (s, qi, h, n) in enumerate(zip(index[1:], q, half, shape))
        ]
        grid = torch.stack([g.expand(box) for g in grid] + [torch.ones(box, dtype=torch.float64)])
        out = self._resample(x, grid=grid.to(x.device), dtype=torch.float64)
        return convert_to_tensor(out, dtype=x.dtype, device=x.device, track_meta=False)


class PatchArtifactd(ArtifactDict):
    """Dictionary twin of :class:`PatchArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = PatchArtifact


class DiscArtifactd(ArtifactDict):
    """Dictionary twin of :class:`DiscArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = DiscArtifact


class TextTagArtifactd(ArtifactDict):
    """Dictionary twin of :class:`TextTagArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = TextTagArtifact


class RulerArtifactd(ArtifactDict):
    """Dictionary twin of :class:`RulerArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = RulerArtifact


class LocalIntensityArtifactd(ArtifactDict):
    """Dictionary twin of :class:`LocalIntensityArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = LocalIntensityArtifact


class LocalDeformationArtifactd(ArtifactDict):
    """Dictionary twin of :class:`LocalDeformationArtifact` (keys, allow_missing_keys, then its parameters)."""

    artifact_class = LocalDeformationArtifact
