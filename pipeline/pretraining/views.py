"""Two independently augmented views per image, and the ``prepare_batch`` that feeds both to the engine."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.transforms import Compose, CopyItemsd, MapTransform
from monai.utils import convert_to_tensor

VIEW_KEY = "image_2"


def _for_key(transform: MapTransform, key: str) -> MapTransform:
    """A deep copy of ``transform`` that acts on ``key`` (own parameters, own random state)."""
    clone = copy.deepcopy(transform)
    clone.keys = (key,)
    return clone


def two_view_augmentation(
    augmentations: Sequence[MapTransform], key: str = "image", view_key: str = VIEW_KEY
) -> Compose:
    """Copy ``key`` to ``view_key``, then augment each of the two with its own copy of ``augmentations``.

    MONAI's dictionary transforms draw one set of random parameters per call and apply it to all
    their keys, so each augmentation is cloned per view: the two views get independent crops,
    flips, intensities and noise. The result is a ``Compose`` (randomizable as a whole), so a
    ``CacheDataset`` caches the images before the copy, not both views. Seed it like any MONAI
    transform (``set_random_state``; MONAI's DataLoader does it from torch's seed).

    Args:
        augmentations: MONAI dictionary transforms acting on ``key`` only (e.g.
            ``RandScaleCropd(keys="image", ...)``); they are copied, never modified.
        key: the image key; view 1 stays under it.
        view_key: key of view 2.

    Raises:
        ValueError: when ``key`` equals ``view_key``, or an augmentation is not a MONAI
            dictionary transform acting on exactly ``[key]``.
    """
    if key == view_key:
        raise ValueError(f"view_key must differ from key, both are {key!r}")
    for index, transform in enumerate(augmentations):
        keys = getattr(transform, "keys", None)
        if not isinstance(transform, MapTransform) or tuple(keys) != (key,):
            raise ValueError(
                f"augmentations[{index}] must be a MONAI dictionary transform with keys={key!r} "
                f"(it is cloned for {view_key!r}), got {type(transform).__name__} with keys={keys!r}"
            )
    return Compose(
        [
            CopyItemsd(keys=key, times=1, names=view_key),
            *(_for_key(t, key) for t in augmentations),
            *(_for_key(t, view_key) for t in augmentations),
        ]
    )


class TwoViewPrepareBatch(PrepareBatch):
    """``prepare_batch`` for ``SupervisedTrainer``: both views concatenated along the batch, no target.

    Returns ``(cat([view_1, view_2]), None)`` on ``device``: the network sees the 2B images in one
    pass and :class:`~pipeline.pretraining.TwoViewContrastiveLoss` splits its output in halves.
    Labels are never read, so the engine's iteration, AMP flag and events stay MONAI's own.

    Args:
        key: batch key of view 1.
        view_key: batch key of view 2.

    Raises:
        ValueError: (when called) for a batch without both keys or with views of different shapes.
    """

    def __init__(self, key: str = "image", view_key: str = VIEW_KEY) -> None:
        self.key = key
        self.view_key = view_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        keys = (self.key, self.view_key)
        if not isinstance(batchdata, dict) or not all(k in batchdata for k in keys):
            found = sorted(map(str, batchdata)) if isinstance(batchdata, dict) else type(batchdata).__name__
            raise ValueError(f"contrastive pretraining needs batch keys {list(keys)}; got {found}")
        views = [convert_to_tensor(batchdata[k], track_meta=False) for k in keys]
        if views[0].shape != views[1].shape:
            raise ValueError(
                f"the two views must have the same shape, got {self.key!r} {tuple(views[0].shape)} and "
                f"{self.view_key!r} {tuple(views[1].shape)} (resize crops back to one size)"
            )
        return torch.cat(views).to(device=device, non_blocking=non_blocking, **kwargs), None
