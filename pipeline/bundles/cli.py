"""``python -m pipeline.bundles``: run a bundle workflow, launch its multi-GPU training, or export it.

Prints the equivalent ``python -m monai.bundle run`` command (wrapped in torchrun with
``--multi-gpu``), then runs it: the MONAI command in this process, read by MONAI's own command
line (fire) exactly as printed, so that a full or read-only disk ends as one line naming the
file, with exit status 2; the torchrun command replaces this process::

    python -m pipeline.bundles baseline train --scenario localized2d --max_epochs 2
    python -m pipeline.bundles baseline train --multi-gpu 2
    python -m pipeline.bundles export baseline --out DIR --checkpoint runs/baseline/models/model.pt
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from pipeline.atomic import write_error_message
from pipeline.bundles import (
    ANALYSES,
    WORKFLOWS,
    add_bundle_arguments,
    add_override_arguments,
    exec_command,
    monai_command,
    multi_gpu_configs,
)
from pipeline.bundles import export as bundle_export
from pipeline.bundles.torchrun import torchrun_command


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:  # python -m pipeline.bundles export NAME --out DIR: a take-away bundle folder
        return bundle_export.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bundles",
        allow_abbrev=False,  # `--conf`, `--multi` are config ids to check, not abbreviations of options
        description="Run a bundle with its shared config fragments merged (wraps `python -m monai.bundle run`). "
        "Other --key value pairs (or --key=value) override config ids; each key must be an id of the "
        "merged config, and a None value reaches MONAI as '$None' (MONAI's CLI would drop it). "
        "`python -m pipeline.bundles export NAME --out DIR` writes a self-contained bundle folder.",
    )
    add_bundle_arguments(parser)
    parser.add_argument("workflow", nargs="?", default="train", choices=(*WORKFLOWS, *ANALYSES))
    add_override_arguments(parser)
    parser.add_argument("--print-only", action="store_true", help="print the monai.bundle command and exit")
    parser.add_argument(
        "--multi-gpu", type=int, metavar="NPROC", help="train with DDP on NPROC GPUs of this node (torchrun)"
    )
    args, extra = parser.parse_known_args(argv)
    try:
        configs = args.config
        if args.multi_gpu is not None:  # DDP: add the multi-GPU configs, launch with torchrun
            if args.workflow != "train":
                raise ValueError(f"--multi-gpu is for the train workflow, not '{args.workflow}'")
            configs = configs + multi_gpu_configs(args.bundle)
        command = monai_command(args.bundle, args.workflow, args.scenario, configs, extra)
        if args.multi_gpu is not None:
            command = torchrun_command(command[1:], args.multi_gpu)
    except ValueError as err:
        parser.error(str(err))
    if args.multi_gpu is not None or args.print_only:
        return exec_command(command, args.print_only)
    return run_monai_command(command)


def run_monai_command(command: Sequence[str]) -> int:
    """Print ``python -m monai.bundle run ...`` (``command``), then run it in this process as
    MONAI's CLI would (``fire`` reads its arguments); returns the exit status. An output that
    cannot be written (disk full, read-only, no permission) is one line on stderr, exit status 2;
    every other error keeps its traceback."""
    import fire
    from monai.bundle import scripts

    print(shlex.join(command), flush=True)
    try:
        fire.Fire({"run": scripts.run}, command=list(command[command.index("monai.bundle") + 1:]))
    except Exception as err:
        message = write_error_message(err)
        if message is None:
            raise
        print(f"python -m pipeline.bundles: error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0
