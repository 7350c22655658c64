"""Group-balanced sampling: every group (label x bias) equally likely in each draw."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from pipeline.mitigation.groups import group_index

__all__ = ["datalist_groups", "group_balanced_sampler"]


def datalist_groups(
    items: Sequence[Mapping],
    decide: Callable[..., int | bool] | None = None,
    label_key: str = "label",
    bias_key: str = "bias",
    decide_keys: Sequence[str] | None = None,
) -> list[int]:
    """Group id ``2 * label + bias`` of every datalist item.

    Args:
        items: datalist dictionaries holding ``label_key``.
        decide: ``decide(item) -> bias`` (0/1), e.g. the injection transform's deterministic
            per-sample decision; when ``None`` the bias is read from ``item[bias_key]``.
        label_key: key of the class label.
        bias_key: key of the artifact flag, used when ``decide`` is ``None``.
        decide_keys: when given, ``decide`` is called with these items' values as positional
            arguments instead of the item, e.g. ``decide=inject.injection.decide,
            decide_keys=("label", "id")`` (bundle expressions cannot hold lambdas with ``@`` refs).

    Raises:
        ValueError: when an item lacks a key or a label/bias is not 0/1.
    """
    if decide_keys is not None and decide is None:
        raise ValueError(f"decide_keys={list(decide_keys)} needs decide= as well.")
    needed = [label_key] + ([bias_key] if decide is None else list(decide_keys or ()))
    groups = []
    for i, item in enumerate(items):
        missing = [key for key in needed if key not in item]
        if missing:
            raise ValueError(
                f"datalist item {i} has no key {missing[0]!r} (keys: {sorted(map(str, item))})"
                + (
                    "; pass decide= to compute the bias flag."
                    if missing[0] == bias_key and decide is None
                    else "."
                )
            )
        if decide is None:
            bias = item[bias_key]
        elif decide_keys is None:
            bias = decide(item)
        else:
            bias = decide(*(item[key] for key in decide_keys))
        groups.append(int(group_index(item[label_key], bias)))
    return groups


def group_balanced_sampler(
    groups: Sequence[int], num_samples: int | None = None, seed: int = 0
) -> WeightedRandomSampler:
    """Sampler drawing (with replacement) each non-empty group with equal probability.

    Sample ``i`` gets weight ``1 / n_{g_i}``. Use as ``DataLoader(..., sampler=..., shuffle=False)``.

    Args:
        groups: group id of every dataset item (see :func:`datalist_groups`).
        num_samples: draws per epoch; default ``len(groups)``.
        seed: seed of the sampler's own ``torch.Generator`` (same seed, same sequence of epochs).

    Raises:
        ValueError: when ``groups`` is empty or holds negative ids, or ``num_samples`` < 1.
    """
    ids = np.asarray(groups, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise ValueError("groups must not be empty.")
    if (ids < 0).any():
        raise ValueError(f"groups must be non-negative ids, got {ids[ids < 0][:8].tolist()}.")
    num_samples = ids.size if num_samples is None else num_samples
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
    counts = np.bincount(ids)
    weights = torch.as_tensor(1.0 / counts[ids], dtype=torch.double)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(weights, num_samples=int(num_samples), replacement=True, generator=generator)
