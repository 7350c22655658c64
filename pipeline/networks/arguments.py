"""Validation of the arguments every network builder shares (dims, channel counts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` when it is 2 or 3.

    Raises:
        ValueError: for any other value.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` when it is an int >= 1.

    Raises:
        ValueError: naming the parameter ``name`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_channels(channels: Sequence[int], name: str = "channels") -> tuple[int, ...]:
    """Return a per-stage channel list as a tuple of positive ints.

    Raises:
        ValueError: when ``channels`` is not a non-empty sequence of positive ints.
    """
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {channels!r}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {list(channels)!r}")
    return tuple(channels)


def check_input_size(x: torch.Tensor, minimum: int, network: str, hint: str) -> None:
    """Raise a ValueError when a spatial side of ``x`` (B, C, *spatial) is below ``minimum``.

    Called at the start of ``forward`` (TorchScript-compatible), so that a too-small input is
    reported with the minimum and how to lower it instead of a pooling error deep inside.

    Raises:
        ValueError: naming ``network``, the input's spatial shape, ``minimum`` and ``hint``.
    """
    spatial = list(x.shape[2:])
    if len(spatial) > 0 and min(spatial) < minimum:
        raise ValueError(
            f"{network} needs inputs of at least {minimum} pixels per side, got spatial shape {spatial}; {hint}"
        )
