"""Per-module mutation score from mutmut's results in ``mutants/`` (run after ``make mutate``).

Prints, for each mutated module, killed / total and the score, and the name of every mutant that
was not killed (``mutmut show NAME`` prints its diff). Timeouts count as killed, as in mutmut's own
score; mutants without a result yet are listed as ``not checked``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}
OTHER = {0: "survived", None: "not checked", 5: "no tests", 33: "no tests", 34: "skipped", 37: "type check"}


def status(exit_code) -> str:
    return KILLED.get(exit_code) or OTHER.get(exit_code, "suspicious")


def summary(mutants: Path = Path("mutants")) -> list[tuple[str, Counter, list[str]]]:
    """(module file, count per status, names of mutants not killed) for every ``*.py.meta``."""
    rows = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(status(code) for code in codes.values())
        alive = sorted(name for name, code in codes.items() if code not in KILLED)
        rows.append((str(meta.relative_to(mutants))[: -len(".meta")], counts, alive))
    return rows


def main() -> int:
    rows = summary()
    if not rows:
        print("no mutmut results in mutants/: run `make mutate` first")
        return 1
    for module, counts, alive in rows:
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.1f}%) {dict(counts)}")
        for name in alive:
            print(f"    {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
