"""Multi-GPU / multi-node training at run time: process group, ranks, devices, rank-0-only handlers.

The bundles' multi-GPU configs (``common/configs/multi_gpu.yaml``, ``<bundle>/configs/multi_gpu_train.yaml``)
call the functions below; torchrun sets the environment they read (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Every function also works in a single process
without a process group (rank 0 of 1), so the same config code runs with and without torchrun.
The launch command is built by :mod:`pipeline.bundles.torchrun`.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Sequence

import torch
import torch.distributed as dist

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# handlers that only write (logs, TensorBoard, MLflow, checkpoints, progress bars): rank 0 keeps them
WRITER_HANDLER_NAMES = (
    "StatsHandler",
    "TensorBoardStatsHandler",
    "CheckpointSaver",
    "MLFlowHandler",
    "ClearMLStatsHandler",
    "ProgressBar",
)


def is_distributed() -> bool:
    """True when a default process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank: from the process group, else torchrun's ``RANK``, else 0."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes: from the process group, else torchrun's ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on global rank 0 (the only rank that writes checkpoints, logs and teacher files)."""
    return rank() == 0


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.

    Raises:
        ValueError: ``LOCAL_RANK`` is not a non-negative integer, or names a GPU this node lacks.
    """
    value = os.environ.get("LOCAL_RANK", "0")
    if not value.isdigit():
        raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {value!r}")
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank, count = int(value), torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"LOCAL_RANK={local_rank} but this node has {count} GPU(s): start at most {count} processes "
            "per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def ddp_device_ids(device: torch.device | str) -> list[int] | None:
    """``device_ids`` for DistributedDataParallel: ``[index]`` on a GPU, None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return [device.index if device.index is not None else torch.cuda.current_device()]


def init_process_group(
    device: torch.device | str | None = None, backend: str | None = None, timeout_minutes: float = 30.0
) -> torch.device:
    """Join the default process group that torchrun prepared (no-op when already joined).

    Args:
        device: this process's device (default :func:`local_device`); a GPU becomes the current device.
        backend: ``nccl``, ``gloo`` or ``mpi`` (default :func:`default_backend`).
        timeout_minutes: how long collectives wait for the other ranks.

    Returns:
        the device.

    Raises:
        ValueError: torchrun's environment variables are missing (the script was not started by
            torchrun), or ``backend``/``timeout_minutes`` is invalid.
    """
    device = torch.device(device) if device is not None else local_device()
    backend = backend or default_backend()
    if backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or 'mpi', got {backend!r}")
    if not timeout_minutes > 0:
        raise ValueError(f"timeout_minutes must be positive, got {timeout_minutes!r}")
    if is_distributed():
        return device
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ValueError(
            f"multi-GPU config needs torchrun's environment variables; {missing} are not set. Launch with "
            "`python -m pipeline.bundles <bundle> train --multi-gpu N` or "
            "`python -m pipeline.bundles.torchrun <bundle> --nproc-per-node N`"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def log_on_main_process_only(level: int = logging.WARNING) -> None:
    """On ranks > 0, raise the root logger's level to ``level`` (no-op on rank 0).

    Engines and handlers log through the root logger's handlers; without this every rank prints
    the same progress lines. Warnings and errors of every rank are still shown.
    """
    if not is_main_process():
        logging.getLogger().setLevel(level)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed() and dist.get_world_size() > 1:
        dist.barrier()


def wait_for_main_process() -> None:
    """Ranks > 0 wait here until rank 0 calls :func:`release_waiting_processes` (no-op on rank 0).

    With the pair around a step, rank 0 does it first (e.g. generating a dataset into a shared
    cache) and the other ranks then find its result.
    """
    if not is_main_process():
        barrier()


def release_waiting_processes() -> None:
    """Rank 0 lets the ranks waiting in :func:`wait_for_main_process` go on (no-op on other ranks)."""
    if is_main_process():
        barrier()


def destroy_process_group() -> None:
    """Leave the process group (no-op without one): the configs' ``finalize`` step."""
    if is_distributed():
        dist.destroy_process_group()


def main_process_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0; on other ranks, those that do more than write (see ``WRITER_HANDLER_NAMES``).

    Handlers that take part in training (LR schedule, validation, early stopping, metrics) stay on
    every rank, so that all ranks run the same collectives and stop at the same epoch.
    """
    handlers = [h for h in (handlers or []) if h is not None]
    if is_main_process():
        return handlers
    return [h for h in handlers if type(h).__name__ not in WRITER_HANDLER_NAMES]
