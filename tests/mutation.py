"""Mutation testing of the method's modules with mutmut, each module against its own tests only.

``python -m tests.mutation run [MODULE ...]`` (``make mutate``) runs mutmut for each module in its
own work folder ``.mutmut/<module>/`` (links to the sources and tests, and a setup.cfg whose
``[mutmut]`` section names that module and its test files), so a module's mutants run only its
own tests and each module keeps its own resumable results: a second run tests only mutants
without a result. ``--retest`` also reruns the ones that survived (after adding tests).
``python -m tests.mutation summary`` prints killed / total per module and every mutant not
killed (``cd .mutmut/<module> && mutmut show NAME`` prints its diff).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from pipeline.atomic import write_text

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutmut"
# module name -> (file to mutate, its test files)
MODULES = {
    "losses": ("pipeline/distillation/losses.py",
               ["tests/distillation/test_distillation_losses.py", "tests/distillation/test_distillation_values.py"]),
    "trainer": ("pipeline/distillation/trainer.py",
                ["tests/distillation/test_distillation_trainer.py", "tests/distillation/test_distillation_gradients.py",
                 "tests/distillation/test_teacher_offload.py", "tests/distillation/test_trainer_mutants.py"]),
    "selection": ("pipeline/distillation/selection.py", ["tests/distillation/test_selection.py"]),
    "stage_pairing": ("pipeline/distillation/stage_pairing.py", ["tests/distillation/test_stage_pairing.py"]),
    "target_cache": ("pipeline/distillation/target_cache.py", ["tests/distillation/test_target_cache.py"]),
    "protocol": ("pipeline/evaluation/protocol.py",
                 ["tests/evaluation/test_protocol.py", "tests/evaluation/test_evaluation_metrics.py",
                  "tests/evaluation/test_protocol_mutants.py"]),
    "counterfactual": ("pipeline/evaluation/counterfactual.py",
                       ["tests/evaluation/test_counterfactual.py", "tests/evaluation/test_layers.py",
                        "tests/evaluation/test_counterfactual_mutants.py"]),
    "injection": ("pipeline/transforms/injection.py",
                  ["tests/transforms/test_shortcut_injection.py", "tests/transforms/test_prebiased_injection.py",
                   "tests/transforms/test_injection_mutants.py"]),
}  # fmt: skip
LINKED = ("pipeline", "tests", "bundles", "data_prep")
KILLED = {1, 3, 24, -24, 36, 152, 255}  # test failure, pytest internal error, timeouts (as mutmut scores them)
STATUS = {0: "survived", None: "not checked", 5: "no tests", 33: "no tests", 34: "skipped", 37: "type check"}


def prepare(name: str) -> Path:
    """The work folder of one module: links to the repository's folders and its mutmut config."""
    if name not in MODULES:
        raise ValueError(f"unknown module {name!r}; modules: {list(MODULES)}")
    source, tests = MODULES[name]
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = folder / entry
        if not link.is_symlink():
            link.symlink_to(REPO / entry, target_is_directory=True)
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = ["[tool:pytest]"] + [f"{k} = {v}".replace("\n", "\n    ") for k, v in config["tool:pytest"].items()]
    lines += [
        "", "[mutmut]", "source_paths = pipeline/", f"only_mutate = {source}",
        "also_copy =\n    bundles/\n    data_prep/",
        "pytest_add_cli_args_test_selection =" + "".join(f"\n    {t}" for t in tests),
        "timeout_multiplier = 5.0",
    ]  # fmt: skip
    write_text("\n".join(lines) + "\n", folder / "setup.cfg")
    return folder


def survivors(folder: Path) -> list[str]:
    return [name for name, code in _exit_codes(folder).items() if code not in KILLED]


def run(names: list[str], jobs: int, retest: bool) -> int:
    mutmut = str(Path(sys.executable).parent / "mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the mutated copy must be the one imported
    for name in names:
        folder = prepare(name)
        command = [mutmut, "run", "--max-children", str(jobs)]
        alive = survivors(folder) if retest else []
        print(f"== {name}: {MODULES[name][0]}" + (f" (retesting {len(alive)})" if alive else ""), flush=True)
        done = subprocess.run(command + alive, cwd=folder, env=env)
        if done.returncode != 0:
            return done.returncode
    return 0


def _exit_codes(folder: Path) -> dict:
    codes = {}
    for meta in (folder / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def summary(names: list[str]) -> list[str]:
    """One line per module with results (killed / total, score, counts), then its mutants not killed."""
    lines = []
    for name in names:
        codes = _exit_codes(WORK / name)
        if not codes:
            lines.append(f"{name}: no results (run `make mutate MODULES={name}`)")
            continue
        counts = Counter("killed" if c in KILLED else STATUS.get(c, "suspicious") for c in codes.values())
        killed = counts["killed"]
        lines.append(
            f"{name} ({MODULES[name][0]}): {killed}/{len(codes)} killed ({100 * killed / len(codes):.1f}%) {dict(counts)}"
        )
        lines += [f"    {m}" for m in sorted(m for m, c in codes.items() if c not in KILLED)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "summary"])
    parser.add_argument("modules", nargs="*", help=f"default: all of {list(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutmut workers (default 1)")
    parser.add_argument("--retest", action="store_true", help="also rerun the mutants that survived")
    args = parser.parse_args(argv)
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; modules: {list(MODULES)}")
    if args.command == "run":
        code = run(names, args.jobs, args.retest)
        if code:
            return code
    print("\n".join(summary(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
