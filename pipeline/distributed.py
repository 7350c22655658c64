"""Multi-GPU / multi-node training with torchrun: process group, ranks, and the launch command.

The bundles' ``multi_gpu_train.yaml`` configs call the functions below; torchrun sets the
environment they read (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
Every function also works in a single process without a process group (rank 0 of 1), so the
same config code runs with and without torchrun.

Command line (prints the torchrun command, then runs it)::

    python -m pipeline.distributed baseline --nproc-per-node 2 --max_epochs 2
    python -m pipeline.distributed teacher --nproc-per-node 8 --nnodes 2 \\
        --rdzv-endpoint node0.example.org:29400 --rdzv-id teacher-42
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from pipeline.bundles import BUNDLES_ROOT, COMMON, bundle_names

MULTI_GPU_COMMON = "multi_gpu.yaml"
MULTI_GPU_TRAIN = "multi_gpu_train.yaml"
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
            "`torchrun --nproc_per_node N -m pipeline.bundles <bundle> train --multi-gpu ...` or "
            "`python -m pipeline.distributed <bundle> --nproc-per-node N`"
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


def multi_gpu_configs(bundle: str, root: Path = BUNDLES_ROOT) -> list[str]:
    """The override files that turn ``bundle``'s training into DDP training, in merge order.

    Raises:
        ValueError: unknown bundle, or the bundle has no ``configs/multi_gpu_train.yaml``.
    """
    if bundle not in bundle_names(root):
        raise ValueError(f"bundle '{bundle}' not found under {root}; bundles: {bundle_names(root)}")
    files = [root / COMMON / "configs" / MULTI_GPU_COMMON, root / bundle / "configs" / MULTI_GPU_TRAIN]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        with_file = [b for b in bundle_names(root) if (root / b / "configs" / MULTI_GPU_TRAIN).is_file()]
        raise ValueError(
            f"bundle '{bundle}' cannot train on several GPUs: {absent} missing; bundles that can: {with_file}"
        )
    return [str(f.absolute()) for f in files]


def torchrun_command(
    program: Sequence[str],
    nproc_per_node: int | str,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    rdzv_backend: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run ...`` (torchrun) around ``program``.

    One node: ``--standalone`` (a local rendezvous on a free port). Several nodes: run the same
    command on every node with the same ``rdzv_endpoint`` (``host:port`` of one node, reachable
    from all) and ``rdzv_id``. Without ``node_rank`` the ``c10d`` rendezvous assigns the node
    ranks as the nodes join; with it (a different one per node) the ``static`` rendezvous is used
    and the endpoint is node 0's address (torchrun ignores ``--node_rank`` with ``c10d``).

    Args:
        program: what each worker runs, e.g. ``["-m", "monai.bundle", "run", ...]`` or ``["script.py", ...]``.
        nproc_per_node: processes per node (one per GPU), or torchrun's ``gpu``/``cpu``/``auto``.
        nnodes: number of nodes.
        node_rank: this node's rank; selects the static rendezvous.
        rdzv_endpoint: ``host:port`` of the rendezvous; required when ``nnodes > 1``.
        rdzv_id: job id shared by the nodes (default ``shortcut-kd``).
        rdzv_backend: torchrun's rendezvous backend (default ``static`` with ``node_rank``, else ``c10d``).

    Raises:
        ValueError: a bad count, a missing or malformed endpoint, or an empty program.
    """
    if not program:
        raise ValueError("program must name a script or `-m module` to run, got an empty list")
    if str(nproc_per_node) not in ("gpu", "cpu", "auto") and not _positive_int(nproc_per_node):
        raise ValueError(
            f"nproc_per_node must be a positive integer or 'gpu', 'cpu', 'auto'; got {nproc_per_node!r}"
        )
    if not _positive_int(nnodes):
        raise ValueError(f"nnodes must be a positive integer, got {nnodes!r}")
    if node_rank is not None and not (isinstance(node_rank, int) and 0 <= node_rank < int(nnodes)):
        raise ValueError(f"node_rank must be an integer in [0, {nnodes}), got {node_rank!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc_per_node)]
    if int(nnodes) == 1 and rdzv_endpoint is None:
        command.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError(f"rdzv_endpoint (host:port) is required with nnodes={nnodes}")
        host, _, port = str(rdzv_endpoint).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"rdzv_endpoint must be 'host:port', got {rdzv_endpoint!r}")
        command += [
            "--nnodes", str(nnodes),
            "--rdzv_backend", rdzv_backend or ("c10d" if node_rank is None else "static"),
            "--rdzv_endpoint", str(rdzv_endpoint),
            "--rdzv_id", rdzv_id or "shortcut-kd",
        ]  # fmt: skip
        if node_rank is not None:
            command += ["--node_rank", str(node_rank)]
    return command + list(program)


def _positive_int(value: Any) -> bool:
    try:
        return int(value) == float(value) and int(value) >= 1
    except (TypeError, ValueError):
        return False


def bundle_training_command(
    bundle: str,
    nproc_per_node: int | str,
    bundle_args: Sequence[str] = (),
    root: Path = BUNDLES_ROOT,
    **rendezvous: Any,
) -> list[str]:
    """torchrun running ``python -m pipeline.bundles <bundle> train`` with the multi-GPU configs.

    Args:
        bundle: training bundle name.
        nproc_per_node: processes per node (see :func:`torchrun_command`).
        bundle_args: further arguments of ``pipeline.bundles`` (``--scenario``, ``--config``, ``--key value``).
        rendezvous: ``nnodes``, ``node_rank``, ``rdzv_endpoint``, ``rdzv_id`` of :func:`torchrun_command`.

    Raises:
        ValueError: see :func:`multi_gpu_configs` and :func:`torchrun_command`.
    """
    configs = [arg for path in multi_gpu_configs(bundle, root) for arg in ("--config", path)]
    # merged last, so that the DDP wrapper is not undone by a user's override of `network`
    program = ["-m", "pipeline.bundles", bundle, "train", *bundle_args, *configs]
    return torchrun_command(program, nproc_per_node, **rendezvous)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The torchrun options shared by this module's CLI and the Docker entrypoint."""
    parser.add_argument(
        "--nproc-per-node",
        "--nproc",
        dest="nproc_per_node",
        default="gpu",
        help="processes per node, one per GPU (default: every visible GPU)",
    )
    parser.add_argument("--nnodes", type=int, default=1, help="number of nodes (default 1)")
    parser.add_argument(
        "--node-rank",
        type=int,
        default=None,
        help="this node's rank: static rendezvous (default: c10d assigns it)",
    )
    parser.add_argument(
        "--rdzv-endpoint", default=None, help="host:port of the rendezvous, same on every node"
    )
    parser.add_argument("--rdzv-id", default=None, help="job id, same on every node")


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`torchrun_command` keyword arguments from :func:`add_launch_arguments`' options."""
    return {
        "nproc_per_node": args.nproc_per_node,
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
        "rdzv_endpoint": args.rdzv_endpoint,
        "rdzv_id": args.rdzv_id,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.distributed",
        allow_abbrev=False,
        description="Train a bundle with DistributedDataParallel on one or several nodes (wraps torchrun). "
        "Other arguments go to `python -m pipeline.bundles <bundle> train`.",
    )
    parser.add_argument("bundle", help=f"one of {bundle_names()}")
    add_launch_arguments(parser)
    parser.add_argument("--print-only", action="store_true", help="print the torchrun command and exit")
    args, bundle_args = parser.parse_known_args(argv)
    try:
        command = bundle_training_command(args.bundle, bundle_args=bundle_args, **launch_options(args))
    except ValueError as err:
        parser.error(str(err))
    from pipeline.bundles import exec_command

    return exec_command(command, args.print_only)


if __name__ == "__main__":
    sys.exit(main())
