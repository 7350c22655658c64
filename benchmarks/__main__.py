"""Run the benchmarks: every ``benchmarks/bench_*.py``, or the ones named, each in its own process.

    python -m benchmarks                                   # all of them, default options
    python -m benchmarks distillation                      # one (``bench_`` and ``.py`` optional)
    python -m benchmarks distillation -- --iterations 10   # options after ``--`` go to each one named
    make bench ARGS="distillation -- --device cuda"

Benchmarks report (tables, PASS/FAIL per target); a missed target does not fail the run. The exit
status is non-zero only when a benchmark itself fails (crashes or rejects its options).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

FOLDER = Path(__file__).resolve().parent


def available_benchmarks() -> list[str]:
    """Names of the benchmark modules in this folder (``bench_*.py``), sorted."""
    return sorted(path.stem for path in FOLDER.glob("bench_*.py"))


def resolve(names: Sequence[str]) -> list[str]:
    """Module names for ``names`` (``distillation``, ``bench_distillation`` or ``bench_distillation.py``).

    Raises:
        ValueError: for a name that matches no benchmark (the message lists the available ones).
    """
    available = available_benchmarks()
    modules = []
    for name in names:
        stem = Path(name).name.removesuffix(".py")
        module = stem if stem.startswith("bench_") else f"bench_{stem}"
        if module not in available:
            raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(available)}")
        modules.append(module)
    return list(dict.fromkeys(modules))


def commands(names: Sequence[str], options: Sequence[str] = ()) -> list[list[str]]:
    """One ``python -m benchmarks.<module> <options>`` command per benchmark (all when ``names`` is empty)."""
    modules = resolve(names) if names else available_benchmarks()
    return [[sys.executable, "-m", f"benchmarks.{module}", *options] for module in modules]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks named in ``argv`` (options after ``--``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print(f"available: {', '.join(available_benchmarks())}")
        return 0
    split = argv.index("--") if "--" in argv else len(argv)
    names, options = argv[:split], argv[split + 1 :]
    if options and not names:
        print("options after '--' need the benchmark(s) they are for, e.g. 'distillation -- --iterations 10'",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        to_run = commands(names, options)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    failed = []
    for command in to_run:
        print(f"== {command[2]} {' '.join(options)}".rstrip(), flush=True)
        if subprocess.run(command, cwd=FOLDER.parent).returncode != 0:
            failed.append(command[2])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
