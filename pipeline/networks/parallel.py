"""The one place that knows about DataParallel / DistributedDataParallel wrappers.

Both wrappers hold the real network as ``.module`` and prefix every parameter name and module
path with ``module.``. Feature hooks and checkpoint loading resolve names through the two
functions below, so a name or a state-dict key works with and without the prefix.
"""

from __future__ import annotations

from torch import nn

PARALLEL_PREFIX = "module."


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the network inside a DataParallel / DistributedDataParallel wrapper (or ``model`` itself).

    Args:
        model: a network, possibly wrapped (several times) in ``nn.DataParallel`` or
            ``nn.parallel.DistributedDataParallel``.
    """
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def strip_parallel_prefix(name: str) -> str:
    """Remove every leading ``module.`` from a module path or state-dict key."""
    while name.startswith(PARALLEL_PREFIX):
        name = name[len(PARALLEL_PREFIX) :]
    return name
