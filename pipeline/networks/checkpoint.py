"""Load saved weights into a network: MONAI CheckpointSaver files or plain state dicts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.networks.parallel import PARALLEL_PREFIX, strip_parallel_prefix, unwrap_model
from pipeline.networks.pretrained import adapt_input_channels, rename_keys

logger = logging.getLogger(__name__)

_KNOWN_KEYS = ("network", "model", "state_dict")
_LISTED = 10  # keys listed per category in messages


@dataclass(frozen=True)
class CheckpointLoadReport:
    """What :func:`load_checkpoint` loaded and skipped.

    Attributes:
        path: the checkpoint file.
        key: the entry of the checkpoint dict that held the weights (None: the file was a state dict).
        loaded_keys: model keys set from the checkpoint.
        missing_keys: model keys absent from the checkpoint (left as they were).
        unexpected_keys: checkpoint keys the model does not have (ignored).
        shape_mismatched_keys: keys in both whose shapes differ (left as they were), e.g. a
            classifier head with another number of classes.
        adapted_keys: loaded keys whose kernels were fitted to the model's input channels.
    """

    path: Path
    key: str | None
    loaded_keys: tuple[str, ...]
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    shape_mismatched_keys: tuple[str, ...]
    adapted_keys: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every model key was loaded and nothing was skipped."""
        return not (self.missing_keys or self.unexpected_keys or self.shape_mismatched_keys)

    def summary(self) -> str:
        """The file and matching-key count, then one line per skipped category (up to ten keys each)."""
        entry = f" (entry {self.key!r})" if self.key else ""
        lines = [f"{self.path}{entry}: {len(self.loaded_keys)} matching keys"]
        for label, keys in (
            ("missing", self.missing_keys),
            ("unexpected", self.unexpected_keys),
            ("shape-mismatched", self.shape_mismatched_keys),
            ("input channels adapted", self.adapted_keys),
        ):
            if keys:
                more = f" ... (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
                lines.append(f"  {label} ({len(keys)}): {', '.join(keys[:_LISTED])}{more}")
        return "\n".join(lines)


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _select_state_dict(checkpoint: object, key: str | None, path: Path) -> tuple[str | None, Mapping]:
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of weights")
    if key is not None:
        if key not in checkpoint:
            raise ValueError(
                f"checkpoint {path} has no entry key={key!r}; its entries: {sorted(map(str, checkpoint))}"
            )
        if not _is_state_dict(checkpoint[key]):
            raise ValueError(f"entry {key!r} of checkpoint {path} is not a state dict (name -> tensor)")
        return key, checkpoint[key]
    if _is_state_dict(checkpoint):
        return None, checkpoint
    for known in _KNOWN_KEYS:
        if known in checkpoint and _is_state_dict(checkpoint[known]):
            return known, checkpoint[known]
    candidates = [k for k, v in checkpoint.items() if _is_state_dict(v)]
    if len(candidates) == 1:
        return candidates[0], checkpoint[candidates[0]]
    raise ValueError(
        f"cannot tell which entry of checkpoint {path} holds the network weights "
        f"(state-dict entries: {sorted(map(str, candidates))}; all entries: {sorted(map(str, checkpoint))}); "
        "pass key=..."
    )


def read_checkpoint(path: str | Path, expected: str) -> object:
    """``torch.load(path, weights_only=True)`` onto the CPU, with errors that name the file.

    Args:
        path: the checkpoint file.
        expected: what the file should hold, for the messages (e.g. "a teacher checkpoint").

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a torch checkpoint (corrupt, truncated, another format) or
            holds objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path} (expected {expected})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files (pickle, zip, unicode, EOF)
        reason = _torch_reason(error)
        if "Unsupported global" in reason:
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and plain containers, which weights_only=True "
                f"refuses (expected {expected}; save state_dict()s, not modules): {reason}"
            ) from error
        raise ValueError(
            f"checkpoint {path} cannot be read: it is corrupt, truncated or not a file written by torch.save "
            f"(expected {expected}; torch: {reason})"
        ) from error


def _torch_reason(error: Exception) -> str:
    """The line of a torch.load error that says what is wrong (not its advice to load unsafely)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip()
    return lines[0] if lines and not lines[0].startswith("Weights only load failed") else type(error).__name__


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    key: str | None = None,
    strict: bool = True,
    min_loaded_share: float = 0.0,
    key_map: str | list | None = None,
    adapt_channels: bool = False,
) -> CheckpointLoadReport:
    """Load weights saved by MONAI's CheckpointSaver (``{"network": ..., "optimizer": ...}``) or a state dict.

    The file is read with ``torch.load(..., weights_only=True)`` onto the CPU; the weights are
    then copied into ``model`` on whatever device it lives. A ``module.`` prefix left by
    DataParallel/DDP is removed from the checkpoint's keys, and a wrapped ``model`` is unwrapped.

    Args:
        model: the network to load into (modified in place: that is the purpose).
        path: checkpoint file.
        key: entry of the checkpoint dict holding the weights. When None: the file itself if it
            is a state dict, else its ``network``, ``model`` or ``state_dict`` entry, else its
            only state-dict entry.
        strict: True: every key must match in name and shape, else nothing is loaded.
            False: load the keys whose names and shapes match, skip the rest, log and
            report them (e.g. to start a teacher from a model with another number of classes).
        min_loaded_share: with ``strict=False``, the least share of the model's tensors that
            must load (0.5: half), else nothing is loaded and ValueError is raised: a checkpoint
            of another network is an error, not a warning.
        key_map: rename the checkpoint's keys first (weights trained elsewhere): a name of
            :data:`pipeline.networks.pretrained.KEY_MAPS` or ``[[pattern, replacement], ...]``.
        adapt_channels: fit first-layer kernels saved for other input channels (an RGB ImageNet
            stem into a grey network: :func:`pipeline.networks.pretrained.adapt_input_channels`).

    Returns:
        A :class:`CheckpointLoadReport` of loaded and skipped keys.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file cannot be read with ``weights_only=True``, holds no
            recognisable state dict, ``key`` is absent, (strict) keys/shapes differ, or less
            than ``min_loaded_share`` of the model's tensors match; the message names the file
            and the keys.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, "network weights (a state dict, or a dict holding one)")
    key, saved = _select_state_dict(checkpoint, key, path)
    target = unwrap_model(model)
    expected = target.state_dict()
    if all(k.startswith(PARALLEL_PREFIX) for k in saved) and not any(
        k.startswith(PARALLEL_PREFIX) for k in expected
    ):
        saved = {strip_parallel_prefix(k): v for k, v in saved.items()}
    if key_map:
        saved = rename_keys(saved, key_map)
    adapted: tuple[str, ...] = ()
    if adapt_channels:
        saved, adapted = adapt_input_channels(saved, expected)
    mismatched = tuple(k for k in expected if k in saved and saved[k].shape != expected[k].shape)
    report = CheckpointLoadReport(
        path=path,
        key=key,
        loaded_keys=tuple(k for k in expected if k in saved and k not in mismatched),
        missing_keys=tuple(k for k in expected if k not in saved),
        unexpected_keys=tuple(k for k in saved if k not in expected),
        shape_mismatched_keys=mismatched,
        adapted_keys=adapted,
    )
    if strict and not report.complete:
        details = "; ".join(
            f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in mismatched[:_LISTED]
        )
        raise ValueError(
            "checkpoint does not match the model (strict=True, nothing loaded; pass strict=False to load "
            f"the matching keys):\n{report.summary()}" + (f"\n  shapes: {details}" if details else "")
        )
    share = len(report.loaded_keys) / max(len(expected), 1)
    if share < min_loaded_share:
        raise ValueError(
            f"checkpoint {path} matches only {share:.0%} of the model's {len(expected)} tensors "
            f"(at least {min_loaded_share:.0%} required; is it a checkpoint of this network?), nothing loaded:\n"
            f"{report.summary()}"
        )
    target.load_state_dict({k: saved[k] for k in report.loaded_keys}, strict=strict)
    log = logger.info if report.complete else logger.warning
    log("loaded checkpoint %s", report.summary())
    return report
