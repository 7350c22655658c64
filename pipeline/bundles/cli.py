"""``python -m pipeline.bundles``: run a bundle workflow, launch its multi-GPU training, or export it.

Prints the equivalent ``python -m monai.bundle run`` command (wrapped in torchrun with
``--multi-gpu``), then runs it::

    python -m pipeline.bundles baseline train --scenario localized2d --max_epochs 2
    python -m pipeline.bundles baseline train --multi-gpu 2
    python -m pipeline.bundles export baseline --out DIR --checkpoint runs/baseline/models/model.pt
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

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
    return exec_command(command, args.print_only)
