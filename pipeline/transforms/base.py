"""Base classes shared by every artifact: type-preserving application, the dictionary twin, parameter checks.

An artifact works on a float copy of the image as a plain torch tensor on the image's device and
hands back the input's type (numpy array, torch tensor or MetaTensor with its metadata), dtype and
device. Integer images are rounded and clipped to their dtype's range. The input is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from pipeline.transforms.geometry import spatial_shape


def check_number(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """`value` as a float if it is a finite number in [low, high].

    Raises:
        ValueError: naming `name`, the value and the allowed range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}.")
    return float(value)


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`.

    Raises:
        ValueError: naming `name`, the value and the allowed values.
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown; use one of {list(allowed)}.")
    return value


def to_work_tensor(img: NdarrayOrTensor) -> torch.Tensor:
    """Float copy-safe view of `img` as a plain tensor: float64 stays float64, all else becomes float32.

    Raises:
        ValueError: when `img` is not (C, H, W) or (C, H, W, D).
    """
    spatial_shape(img)
    x = img.as_tensor() if isinstance(img, MetaTensor) else convert_to_tensor(img, track_meta=False)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(dtype)


def restore_like(out: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """Convert a work tensor back to `img`'s type, dtype and device (MetaTensor metadata copied)."""
    if isinstance(out, MetaTensor):
        out = out.as_tensor()
    dtype = img.dtype
    if isinstance(dtype, torch.dtype):
        is_integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    else:
        is_integer = bool(np.issubdtype(dtype, np.integer))
    if is_integer:
        out = torch.round(out)
    restored, *_ = convert_to_dst_type(out, img, safe=is_integer)
    return restored


class Artifact(Randomizable, Transform):
    """Base of all artifacts: ``artifact(img)`` returns a new image of the same type with the artifact.

    Subclasses implement ``_apply(x)`` on a float work tensor (C, H, W[, D]) and draw every random
    part from ``self.R``. ``artifact(img, randomize=False)`` repeats the previous draw (the same
    noise, position, coefficients), which the dictionary twin uses to give every key the same artifact.
    Seed with ``set_random_state(seed=...)``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __new__(cls, *args: Any, **kwargs: Any) -> Artifact:
        artifact = super().__new__(cls)
        # the arguments it was built with: a run records its artifact as a config (pipeline.bundles.run_settings)
        artifact.init_arguments = (args, dict(kwargs))
        return artifact

    def __init__(self) -> None:
        self._draw_state: tuple | None = None

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Artifact:
        super().set_random_state(seed=seed, state=state)
        self._draw_state = None
        return self

    def randomize(self, data: Any = None) -> None:
        """Start a new draw: the next application uses fresh random parts."""
        self._draw_state = self.R.get_state()

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Apply the artifact.

        Args:
            img: (C, H, W) or (C, H, W, D) numpy array, torch tensor or MetaTensor.
            randomize: draw new random parts (True) or repeat the previous draw (False).

        Raises:
            ValueError: when `img` has the wrong number of dimensions or the artifact does not fit.
        """
        x = to_work_tensor(img)
        if randomize or self._draw_state is None:
            self.randomize()
        else:
            self.R.set_state(self._draw_state)
        return restore_like(self._apply(x), img)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply.")


class ArtifactDict(Randomizable, MapTransform):
    """Dictionary twin of an artifact: applies ``artifact_class(**kwargs)`` to each of `keys`.

    Every key gets the same random draw (same noise, position, coefficients) within one call.

    Args:
        keys: keys of the items to change.
        allow_missing_keys: skip keys that are absent instead of raising KeyError.
        kwargs: parameters of the array artifact.
    """

    artifact_class: type[Artifact] = Artifact

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.artifact = self.artifact_class(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> ArtifactDict:
        super().set_random_state(seed=seed, state=state)
        self.artifact.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.artifact.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i, key in enumerate(self.key_iterator(d)):
            d[key] = self.artifact(d[key], randomize=i == 0)
        return d
