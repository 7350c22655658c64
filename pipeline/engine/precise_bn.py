"""Precise BatchNorm: recompute the running statistics over many training batches each epoch.

BatchNorm's running averages (momentum 0.1) follow the last few batches of a changing network;
on the embedded data with a subtle finding this noise shifted the eval-mode logits enough to
send a model's accuracy at threshold 0.5 from 0.96 to 0.58 between epochs, while train-mode
(batch statistics) accuracy stayed at 0.96 and AUC was unaffected. Recomputing the statistics
as a plain average over ``num_batches`` batches (Wu & Johnson, "Rethinking BatchNorm", 2021)
removed the effect. Frozen BatchNorm layers (affine parameters without gradients) are left alone.
"""

from __future__ import annotations

import itertools

import torch
from ignite.engine import Engine, Events
from torch import nn


class PreciseBatchNorm:
    """At the end of every epoch, set BatchNorm running statistics to their average over batches.

    Attach before the validation handler so that validation and checkpoints see the new values.

    Args:
        network: the trained network (may be wrapped in DDP).
        data_loader: the training loader; batches are prepared with the engine's ``prepare_batch``.
        num_batches: batches to average over; 0 disables the handler.
    """

    def __init__(self, network: nn.Module, data_loader, num_batches: int = 20) -> None:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self.network, self.data_loader, self.num_batches = network, data_loader, int(num_batches)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        layers = [
            m
            for m in self.network.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats
            and (m.weight is None or m.weight.requires_grad)
        ]
        if not layers or not self.num_batches:
            return
        momenta = [m.momentum for m in layers]
        was_training = self.network.training
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average
        self.network.train()
        try:
            with torch.no_grad():
                for batch in itertools.islice(self.data_loader, self.num_batches):
                    inputs = engine.prepare_batch(batch, engine.state.device, engine.non_blocking)[0]
                    self.network(inputs)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
            self.network.train(was_training)
        _average_across_processes(layers)


def _average_across_processes(layers) -> None:
    """Under DDP every rank averaged its own shard: make all ranks hold the mean of those."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for layer in layers:
        for buffer in (layer.running_mean, layer.running_var):
            torch.distributed.all_reduce(buffer)
            buffer /= world
