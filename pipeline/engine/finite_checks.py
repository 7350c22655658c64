"""Stop on non-finite data: a loaded image with NaN/inf values, or a non-finite training loss.

``CheckFinited`` goes after ``LoadImaged`` (base.yaml) and names the image's file;
``FiniteLossCheck`` stops the trainer before the optimizer step of a batch whose loss is not
finite, naming the epoch, iteration and the batch's sample ids, so no NaN weights are saved.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from ignite.engine import Engine
from monai.config import KeysCollection
from monai.engines.utils import IterationEvents
from monai.transforms import MapTransform
from monai.utils import CommonKeys


class NonFiniteError(ValueError):
    """A loaded image or a training loss holds NaN or infinite values."""


class CheckFinited(MapTransform):
    """Raise :class:`NonFiniteError` naming the file when an image holds NaN or infinite values.

    The file is the image's ``filename_or_obj`` meta entry (MetaTensor), else the item's ``id``.
    """

    def __init__(self, keys: KeysCollection, id_key: str = "id", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            if not torch.isfinite(image).all():
                meta = getattr(d[key], "meta", {}) or {}
                source = meta.get("filename_or_obj") or f"item id {d.get(self.id_key, '?')}"
                bad = int((~torch.isfinite(image)).sum())
                raise NonFiniteError(
                    f"image '{key}' of {source} has {bad} non-finite (NaN or infinite) values of "
                    f"{image.numel()}; expected finite intensities: fix or remove this file"
                )
        return d


class FiniteLossCheck:
    """Stop training when a batch's loss is NaN or infinite, before the optimizer step.

    Attached to MONAI's ``IterationEvents.LOSS_COMPLETED`` (fired by ``SupervisedTrainer`` after
    the loss and before backward), so the weights of the previous step stay as they were.
    """

    def __init__(self, id_key: str = "id", listed: int = 16):
        self.id_key, self.listed = id_key, listed

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS]
        if torch.isfinite(loss.detach()).all():
            return
        ids = engine.state.batch.get(self.id_key) if isinstance(engine.state.batch, Mapping) else None
        raise NonFiniteError(
            f"training loss is {loss.detach().flatten()[:1].item()} at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}{_ids(ids, self.listed)}; stopped before the optimizer step "
            "(check the data, learning rate and loss)"
        )


def _ids(ids: Sequence | None, listed: int) -> str:
    if ids is None:
        return ""
    ids = [str(i) for i in ids]
    more = f" ... (+{len(ids) - listed} more)" if len(ids) > listed else ""
    return f" (batch sample ids: {', '.join(ids[:listed])}{more})"
