"""Where a localized artifact goes: image shape checks, and size, position, margin and region parsing.

Conventions (array indices, channel first): a 2D image is (C, H, W) and a 3D volume (C, H, W, D).
"top" is index 0 of the first spatial axis, "left" index 0 of the second. Sizes are pixels (int)
or fractions of the image axis (float <= 1.0). An artifact occupies an axis-aligned box given by
its start corner and its size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

NAMED_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre", "center")
POSITION_NAMES = NAMED_POSITIONS + ("random",)

Length = Union[int, float]


def spatial_shape(img: Any) -> tuple[int, ...]:
    """Spatial shape of a channel-first 2D or 3D image.

    Args:
        img: array or tensor of shape (C, H, W) or (C, H, W, D).

    Raises:
        ValueError: when the image has another number of dimensions.
    """
    shape = tuple(int(s) for s in img.shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"img must have shape (C, H, W) or (C, H, W, D), got shape {shape} ({len(shape)} dimensions)."
        )
    return shape[1:]


def _check_length(value: Any, name: str) -> Length:
    """One length: a positive int (pixels) or a float in (0, 1] (fraction) or a whole float > 1 (pixels)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}; use pixels (int) or a fraction in (0, 1].")
        return int(value)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}; use pixels (int) or a fraction in (0, 1].")
    if value > 1.0 and not value.is_integer():
        raise ValueError(f"{name} is a fraction of the image only up to 1.0; got {value!r}: use whole pixels.")
    return int(value) if value > 1.0 else value


def check_size(size: Any, name: str = "size") -> Length | tuple[Length, ...]:
    """Validate a size spec: a scalar, or one value per spatial axis (2, or 3 for volumes).

    Raises:
        ValueError: for non-numbers, non-positive values, fractions above 1 or a wrong list length.
    """
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) not in (2, 3):
            raise ValueError(f"{name} must be a scalar or have 2 (2D) or 3 (3D) entries, got {list(size)!r}.")
        return tuple(_check_length(v, name) for v in size)
    return _check_length(size, name)


def _to_pixels(value: Length, n: int) -> int:
    return max(1, int(round(value * n))) if isinstance(value, float) else int(value)


def resolve_size(size: Length | tuple[Length, ...], shape: Sequence[int], name: str = "size") -> tuple[int, ...]:
    """Box size in pixels for an image of spatial `shape`.

    A 2-entry size on a 3D image gives the in-plane size; the depth is the smaller in-plane side.

    Raises:
        ValueError: when the spec has the wrong number of axes or is larger than the image.
    """
    sizes = size if isinstance(size, tuple) else (size,) * len(shape)
    if len(sizes) > len(shape):
        raise ValueError(
            f"{name}={list(sizes)!r} has {len(sizes)} entries but the image has {len(shape)} spatial axes {tuple(shape)}."
        )
    box = tuple(_to_pixels(v, n) for v, n in zip(sizes, shape))
    if len(box) < len(shape):  # in-plane size on a volume: a slab as thick as the smaller in-plane side
        box = box + (min(min(box), shape[2]),)
    if any(b > n for b, n in zip(box, shape)):
        raise ValueError(f"{name}={box} pixels is larger than the image (spatial shape {tuple(shape)}).")
    return box


def check_position(position: Any) -> str | tuple[int, ...]:
    """Validate a position: a name from POSITION_NAMES or start coordinates (ints) per spatial axis.

    Raises:
        ValueError: for an unknown name or coordinates that are not 2 or 3 non-negative integers.
    """
    if isinstance(position, str):
        if position not in POSITION_NAMES:
            raise ValueError(f"position={position!r} is unknown; use one of {list(POSITION_NAMES)} or coordinates.")
        return position
    if isinstance(position, Sequence) and len(position) in (2, 3):
        coords = []
        for v in position:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                break
            if float(v) < 0 or not float(v).is_integer():
                break
            coords.append(int(v))
        else:
            return tuple(coords)
    raise ValueError(
        f"position={position!r} is not valid; use one of {list(POSITION_NAMES)} or a list of 2 or 3 "
        "non-negative integer start coordinates."
    )


def check_margin(margin: Any) -> int:
    """Validate a margin (pixels between the box and the image border for named/random positions).

    Raises:
        ValueError: for a negative or non-integer margin.
    """
    if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer (pixels), got {margin!r}.")
    return int(margin)


def check_region(region: Any) -> tuple[tuple[Length, Length], ...] | None:
    """Validate a region for random positions: [[start, stop], ...] per spatial axis (2 or 3 pairs).

    Values are pixels (int) or fractions of the axis (float <= 1.0); in 3D, 2 pairs leave depth free.

    Raises:
        ValueError: when the region is not a list of (start, stop) pairs with 0 <= start < stop.
    """
    if region is None:
        return None
    message = (
        f"region={region!r} is not valid; use [[start, stop], ...] with 2 or 3 pairs, 0 <= start < stop, "
        "in pixels (int) or fractions (float <= 1.0)."
    )
    if not isinstance(region, Sequence) or isinstance(region, str) or len(region) not in (2, 3):
        raise ValueError(message)
    pairs = []
    for pair in region:
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ValueError(message)
        lo, hi = pair
        for v in (lo, hi):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(message)
            if v < 0 or (isinstance(v, float) and v > 1.0):
                raise ValueError(message)
        if isinstance(lo, float) == isinstance(hi, float) and lo >= hi:
            raise ValueError(message)
        pairs.append((lo if isinstance(lo, float) else int(lo), hi if isinstance(hi, float) else int(hi)))
    return tuple(pairs)


def _region_bounds(region, shape: Sequence[int], margin: int) -> list[tuple[int, int]]:
    if region is not None and len(region) > len(shape):
        raise ValueError(f"region={region!r} has more axes than the image (spatial shape {tuple(shape)}).")
    bounds = []
    for axis, n in enumerate(shape):
        lo, hi = (0, n) if region is None or axis >= len(region) else region[axis]
        lo = int(round(lo * n)) if isinstance(lo, float) else lo
        hi = int(round(hi * n)) if isinstance(hi, float) else hi
        if hi > n:
            raise ValueError(f"region={region!r} reaches beyond the image (spatial shape {tuple(shape)}).")
        bounds.append((max(lo, margin), min(hi, n - margin)))
    return bounds


def resolve_start(
    position: str | tuple[int, ...],
    box: Sequence[int],
    shape: Sequence[int],
    margin: int = 0,
    region: tuple | None = None,
    rng: np.random.RandomState | None = None,
) -> tuple[int, ...]:
    """Start corner of a `box` in an image of spatial `shape`.

    Named positions place the box on the first two spatial axes; in 3D it is centred in depth.
    Coordinates are the box start; in 3D two coordinates leave it centred in depth. "random" draws
    the start uniformly (from `rng`) so that the box lies inside `region` and `margin` from the border.

    Raises:
        ValueError: when the box does not fit at that position, inside the margin or the region.
    """
    shape, box = tuple(shape), tuple(box)
    centred = tuple((n - b) // 2 for n, b in zip(shape, box))
    if position == "random":
        if rng is None:
            raise ValueError("position='random' needs a random state (rng).")
        bounds = _region_bounds(region, shape, margin)
        if any(hi - lo < b for (lo, hi), b in zip(bounds, box)):
            raise ValueError(
                f"size={box} pixels does not fit in region={region!r} with margin={margin} "
                f"(spatial shape {shape}); allowed ranges {bounds}."
            )
        return tuple(int(rng.randint(lo, hi - b + 1)) for (lo, hi), b in zip(bounds, box))
    if isinstance(position, str):
        if any(b + margin > n for b, n in zip(box[:2], shape[:2])) and position not in ("centre", "center"):
            raise ValueError(f"margin={margin} with size={box} does not fit in the image (spatial shape {shape}).")
        if position in ("centre", "center"):
            return centred
        vertical, horizontal = position.split("_")
        start0 = margin if vertical == "top" else shape[0] - box[0] - margin
        start1 = margin if horizontal == "left" else shape[1] - box[1] - margin
        return (start0, start1) + centred[2:]
    if len(position) not in (len(shape), 2):
        raise ValueError(f"position={list(position)!r} must give one start coordinate per spatial axis {shape}.")
    start = tuple(position) + centred[len(position):]
    if any(s + b > n for s, b, n in zip(start, box, shape)):
        raise ValueError(
            f"position={list(position)!r} with size={box} reaches beyond the image (spatial shape {shape})."
        )
    return start


def box_slices(start: Sequence[int], box: Sequence[int]) -> tuple[slice, ...]:
    """Index that selects the box in a channel-first image (all channels)."""
    return (slice(None),) + tuple(slice(s, s + b) for s, b in zip(start, box))
