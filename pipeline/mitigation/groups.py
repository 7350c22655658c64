"""Group ids from class label and bias flag: ``group = 2 * label + bias`` (4 groups).

Group 0: label 0 without artifact, 1: label 0 with artifact, 2: label 1 without artifact,
3: label 1 with artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

__all__ = ["NUM_GROUPS", "group_counts", "group_index"]

NUM_GROUPS = 4

ArrayLike = Union[int, bool, float, Sequence, np.ndarray, torch.Tensor]


def _as_binary(name: str, value: ArrayLike) -> np.ndarray | torch.Tensor:
    """Return ``value`` as an int64 array/tensor after checking every entry is 0 or 1."""
    if isinstance(value, torch.Tensor):
        out = value.detach()
        if out.is_floating_point() and not torch.equal(out, out.round()):
            raise ValueError(
                f"{name} must hold 0/1 values, got non-integer values {out.flatten()[:8].tolist()}."
            )
        out = out.long()
        bad = out[(out != 0) & (out != 1)]
        if bad.numel():
            raise ValueError(f"{name} must hold 0/1 values, got {bad[:8].tolist()}.")
        return out
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric 0/1 values, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{name} must hold 0/1 values, got non-integer values {arr.ravel()[:8].tolist()}.")
    arr = arr.astype(np.int64)
    bad = arr[(arr != 0) & (arr != 1)]
    if bad.size:
        raise ValueError(f"{name} must hold 0/1 values, got {bad[:8].tolist()}.")
    return arr


def group_index(label: ArrayLike, bias: ArrayLike) -> int | np.ndarray | torch.Tensor:
    """Group id ``2 * label + bias`` for scalars, arrays or tensors.

    Non-scalar inputs are flattened (so ``(B,)`` and ``(B, 1)`` agree). A tensor ``label``
    gives a ``torch.long`` tensor on its device; otherwise the result is an int64 array, or a
    Python int when both inputs are scalars.

    Args:
        label: class labels, 0 or 1.
        bias: artifact-present flags, 0/1 or bool.

    Raises:
        ValueError: when a value is not 0/1 or the two inputs hold different numbers of entries.
    """
    lab = _as_binary("label", label)
    bia = _as_binary("bias", bias)
    if lab.ndim == 0 and bia.ndim == 0:
        return int(2 * lab + bia)
    lab, bia = lab.reshape(-1), bia.reshape(-1)
    if lab.shape[0] != bia.shape[0]:
        raise ValueError(
            f"label and bias must have the same number of entries, got {lab.shape[0]} and {bia.shape[0]}."
        )
    if isinstance(lab, torch.Tensor) or isinstance(bia, torch.Tensor):
        device = lab.device if isinstance(lab, torch.Tensor) else bia.device
        return 2 * torch.as_tensor(lab, device=device) + torch.as_tensor(bia, device=device)
    return 2 * lab + bia


def group_counts(
    groups: Sequence[int] | np.ndarray | torch.Tensor, num_groups: int = NUM_GROUPS
) -> list[int]:
    """Number of samples in each group.

    Args:
        groups: group ids in ``[0, num_groups)``.
        num_groups: number of groups.

    Raises:
        ValueError: when ``num_groups`` is not positive or a group id is out of range.
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups}.")
    ids = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= num_groups)]
    if bad.size:
        raise ValueError(f"groups must lie in [0, {num_groups}), got {bad[:8].tolist()}.")
    return np.bincount(ids, minlength=num_groups).tolist()
