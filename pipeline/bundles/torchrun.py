"""The torchrun launcher: the command line that trains a bundle with DDP on one or several nodes.

The processes it starts run the bundle with the multi-GPU configs
(:func:`pipeline.bundles.multi_gpu_configs`), whose steps call :mod:`pipeline.distributed`.
``python -m pipeline.bundles <bundle> train --multi-gpu N`` uses :func:`torchrun_command` for one
node; this module's command line also takes the rendezvous of several nodes (prints the torchrun
command, then runs it)::

    python -m pipeline.bundles.torchrun baseline --nproc-per-node 2 --max_epochs 2
    python -m pipeline.bundles.torchrun teacher --nproc-per-node 8 --nnodes 2 \\
        --rdzv-endpoint node0.example.org:29400 --rdzv-id teacher-42
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from pipeline.bundles import BUNDLES_ROOT, add_bundle_arguments, exec_command, multi_gpu_configs

# torchrun's --nproc_per_node keywords: one process per GPU, per CPU, or GPUs if any else CPUs
NPROC_KEYWORDS = ("gpu", "cpu", "auto")


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
    # imported here, not at the top: it loads torch and MONAI, which `python -m pipeline.bundles`
    # (this module's importer) needs only once the launch is built
    from pipeline.networks.arguments import check_positive_int

    if not program:
        raise ValueError("program must name a script or `-m module` to run, got an empty list")
    if nproc_per_node not in NPROC_KEYWORDS:
        check_positive_int(nproc_per_node, f"nproc_per_node (when not one of {list(NPROC_KEYWORDS)})")
    check_positive_int(nnodes, "nnodes")
    if node_rank is not None and not (isinstance(node_rank, int) and 0 <= node_rank < nnodes):
        raise ValueError(f"node_rank must be an integer in [0, {nnodes}), got {node_rank!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc_per_node)]
    if nnodes == 1 and rdzv_endpoint is None:
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


def process_count(text: str) -> int | str:
    """``--nproc-per-node``'s value: a number of processes as an int, else torchrun's keyword as given."""
    return int(text) if text.isdigit() else text


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The torchrun options shared by this module's CLI and the Docker entrypoint."""
    parser.add_argument(
        "--nproc-per-node",
        "--nproc",
        dest="nproc_per_node",
        type=process_count,
        default="gpu",
        help="processes per node, one per GPU, or gpu/cpu/auto (default gpu: every visible GPU)",
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
        prog="python -m pipeline.bundles.torchrun",
        allow_abbrev=False,
        description="Train a bundle with DistributedDataParallel on one or several nodes (wraps torchrun). "
        "Other arguments go to `python -m pipeline.bundles <bundle> train`.",
    )
    add_bundle_arguments(parser)
    add_launch_arguments(parser)
    parser.add_argument("--print-only", action="store_true", help="print the torchrun command and exit")
    args, bundle_args = parser.parse_known_args(argv)
    try:
        command = bundle_training_command(args.bundle, bundle_args=bundle_args, **launch_options(args))
    except ValueError as err:
        parser.error(str(err))
    return exec_command(command, args.print_only)


if __name__ == "__main__":
    sys.exit(main())
