"""Ignite handler that hands the current batch dictionary to a batch-aware loss."""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["BatchContextHandler"]


class BatchContextHandler:
    """Call ``loss.set_batch(engine.state.batch)`` at every ``ITERATION_STARTED``.

    MONAI's ``SupervisedTrainer`` passes only ``(pred, target)`` to the loss; this gives losses
    such as :class:`~pipeline.mitigation.GroupDROLoss` the batch keys (label, bias) they need.
    In a bundle: ``{"_target_": "pipeline.mitigation.BatchContextHandler", "loss": "@loss"}``
    in ``train#handlers``.

    Args:
        loss: object with a ``set_batch(batch: dict)`` method.

    Raises:
        ValueError: when ``loss`` has no callable ``set_batch``.
    """

    def __init__(self, loss: object) -> None:
        if not callable(getattr(loss, "set_batch", None)):
            raise ValueError(f"loss must have a set_batch(batch) method, got {type(loss).__name__}.")
        self.loss = loss

    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (once; attaching twice is a no-op)."""
        if not engine.has_event_handler(self, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.loss.set_batch(engine.state.batch)
