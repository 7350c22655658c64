"""Two rankings of an audit's scan side by side: by flip rate (the audit's order) and by region
excess (a localized candidate's flip rate above the same mark's median over the grid; see
:func:`pipeline.audit.scan.with_region_excess`), one markdown row per audit folder.

    python -m benchmarks.audit_rankings runs/audit/localized2d_erm_scan200 runs/audit/localized2d_reference_scan200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from pipeline.audit.scan import with_region_excess


def rankings(audit: dict, top: int = 3) -> dict:
    """The ``top`` candidates by flip rate and by region excess (name and value) of one audit.json."""
    entries = with_region_excess(audit["candidates"])
    by_excess = sorted((e for e in entries if e["region_excess"] is not None), key=lambda e: -e["region_excess"])
    return {
        "flip_rate": [(e["name"], e["flip_rate"]) for e in entries[:top]],
        "region_excess": [(e["name"], e["region_excess"]) for e in by_excess[:top]],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audits", nargs="+", help="audit output folders (each with audit.json)")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    print("| audit | top by flip rate | top by region excess |")
    print("| --- | --- | --- |")
    for folder in args.audits:
        ranked = rankings(json.loads((Path(folder) / "audit.json").read_text()), args.top)
        cells = [", ".join(f"`{n}` {v:.3f}" for n, v in ranked[k]) for k in ("flip_rate", "region_excess")]
        print(f"| {Path(folder).name} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
