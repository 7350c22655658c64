"""Entry point of the GPU job image; runs the same way outside Docker.

Usage::

    entrypoint.py [--print-only] COMMAND [ARGS ...]

Commands:
    bundle NAME [WORKFLOW] [ARGS]   python -m pipeline.bundles NAME WORKFLOW ARGS (train, evaluate, inference)
    multi-gpu NAME [LAUNCH] [ARGS]  DDP training with torchrun; LAUNCH: --nproc N, --nnodes M,
                                    --node-rank R, --rdzv-endpoint HOST:PORT, --rdzv-id ID
    experiment [ARGS]               python -m pipeline.experiment ARGS
    data_prep [ARGS]                python -m data_prep ARGS (alias: data-prep)
    shell [CMD ...]                 an interactive shell, or CMD
    help                            this message

Environment:
    SHORTCUT_KD_OUTPUTS   output root given to bundles as --output_root (the image sets /outputs)
    SHORTCUT_KD_DATA      cache of the embedded datasets, read by data_prep (the image sets /data)

The command is printed, then the process is replaced by it (signals and exit codes pass through).
With --print-only it is printed and nothing runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

OUTPUTS_ENV = "SHORTCUT_KD_OUTPUTS"
DATA_ENV = "SHORTCUT_KD_DATA"
OUTPUT_ROOT_KEY = "--output_root"


class UsageError(ValueError):
    """A command line the entry point cannot run (exit status 2)."""


def _has_option(args: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def _with_output_root(args: Sequence[str], env: dict) -> list[str]:
    """``args`` plus ``--output_root $SHORTCUT_KD_OUTPUTS`` unless either is absent."""
    root = env.get(OUTPUTS_ENV)
    if not root or _has_option(args, OUTPUT_ROOT_KEY):
        return list(args)
    return [*args, OUTPUT_ROOT_KEY, root]


def bundle_command(args: Sequence[str], env: dict) -> list[str]:
    if not args or args[0].startswith("-"):
        raise UsageError("bundle needs a bundle name: bundle NAME [train|evaluate|inference] [ARGS]")
    return [sys.executable, "-m", "pipeline.bundles", *_with_output_root(args, env)]


def multi_gpu_command(args: Sequence[str], env: dict) -> list[str]:
    from pipeline.bundles import torchrun

    parser = argparse.ArgumentParser(prog="entrypoint.py multi-gpu", allow_abbrev=False, add_help=False)
    parser.add_argument("bundle", nargs="?")
    torchrun.add_launch_arguments(parser)
    launch, rest = parser.parse_known_args(list(args))
    if launch.bundle is None or launch.bundle.startswith("-"):
        raise UsageError("multi-gpu needs a bundle name: multi-gpu NAME [--nproc N] [ARGS]")
    return torchrun.bundle_training_command(
        launch.bundle, bundle_args=_with_output_root(rest, env), **torchrun.launch_options(launch)
    )


def experiment_command(args: Sequence[str], env: dict) -> list[str]:
    return [sys.executable, "-m", "pipeline.experiment", *args]


def data_prep_command(args: Sequence[str], env: dict) -> list[str]:
    return [sys.executable, "-m", "data_prep", *args]


def shell_command(args: Sequence[str], env: dict) -> list[str]:
    if args:
        return list(args)
    return [shutil.which("bash") or "/bin/sh"]


COMMANDS: dict[str, Callable[[Sequence[str], dict], list[str]]] = {
    "bundle": bundle_command,
    "multi-gpu": multi_gpu_command,
    "experiment": experiment_command,
    "data_prep": data_prep_command,
    "data-prep": data_prep_command,
    "shell": shell_command,
}


def build_command(argv: Sequence[str], env: dict | None = None) -> list[str]:
    """The command line that ``entrypoint.py COMMAND ARGS`` runs.

    Args:
        argv: the subcommand and its arguments (without ``--print-only``).
        env: environment to read ``SHORTCUT_KD_OUTPUTS`` from (default ``os.environ``).

    Raises:
        UsageError: no or an unknown subcommand, or a subcommand without its required name;
            ValueError from :mod:`pipeline.bundles.torchrun` for bad launch options.
    """
    env = dict(os.environ if env is None else env)
    if not argv:
        raise UsageError(f"no command given; commands: {', '.join(COMMANDS)}, help")
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}, help")
    return COMMANDS[name](args, env)


def check_output_root(env: dict) -> None:
    """Create ``$SHORTCUT_KD_OUTPUTS`` if needed and check it is writable.

    Raises:
        UsageError: it cannot be created or written (typically a volume owned by another user).
    """
    root = env.get(OUTPUTS_ENV)
    if not root:
        return
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{OUTPUTS_ENV}={root} cannot be created: {err}") from err
    if not os.access(path, os.W_OK):
        raise UsageError(
            f"{OUTPUTS_ENV}={root} is not writable by uid {os.getuid()}: run the container with "
            "--user $(id -u):$(id -g) or make the mounted folder writable"
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    print_only = False
    while argv and argv[0] in ("--print-only", "--dry-run"):
        print_only = True
        argv.pop(0)
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    try:
        command = build_command(argv)
        if not print_only and argv[0] in ("bundle", "multi-gpu"):
            check_output_root(dict(os.environ))
    except ValueError as err:
        print(f"entrypoint.py: error: {err}", file=sys.stderr)
        return 2
    print(shlex.join(command), flush=True)
    if print_only:
        return 0
    executable = command[0] if os.path.sep in command[0] else shutil.which(command[0])
    if executable is None:
        print(f"entrypoint.py: error: {command[0]!r} not found on PATH", file=sys.stderr)
        return 127
    os.execv(executable, command)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
