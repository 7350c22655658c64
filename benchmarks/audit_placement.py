"""How far from its place does localized3d's shortcut still move the model? Flip rate by offset.

The scan's grid never names localized3d's artifact (docs/audit.md): its deformation candidates sit
on a 3x3 grid whose cells step 10-11 voxels at 32^3, and the best of them flips ERM 0.02 while the
artifact itself flips it 0.87. This probe moves the scenario's own deformation (read from its
scenario file; scoring only, the scan never sees it) away from its place, one axis at a time and
along the diagonal, and records the flip rate and mean class-1 probability shift of ERM and of the
bias-free reference on a seeded sub-sample of the test volumes: how fine a placement grid would
have to be to find it, and what that grid would cost.

    python -m benchmarks.audit_placement
    python -m benchmarks.audit_placement --markdown
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import yaml

from benchmarks.audit_scenarios import SCENARIOS, machine, table_command, training_seed
from pipeline.audit.data import load_images
from pipeline.audit.model import load_audit_model
from pipeline.audit.scan import add_artifact, pair_effect, predict
from pipeline.transforms.geometry import check_size, resolve_size

SCENARIO = "localized3d"
AXES = ("0", "1", "2", "all")
"""The offset moves the box along one spatial axis, or along all three at once."""


def placements(
    position: Sequence[int], box: Sequence[int], shape: Sequence[int], offsets: Sequence[int]
) -> list[tuple[str, int, list[int]]]:
    """(axis, offset, start) of the box moved by each offset along each of :data:`AXES`, keeping
    only starts where the ``box`` (voxels per axis) fits in ``shape``; the unmoved box once, with axis ``none``."""
    out = [("none", 0, list(position))]
    for axis in AXES:
        moved_axes = range(len(shape)) if axis == "all" else [int(axis)]
        for offset in offsets:
            if offset == 0:
                continue
            start = [p + offset if a in moved_axes else p for a, p in enumerate(position)]
            if all(0 <= s <= n - b for s, b, n in zip(start, box, shape)):
                out.append((axis, offset, start))
    return out


def placement_rows(models: Path, method: str, offsets: Sequence[int], max_images: int, seed: int = 0) -> list[dict]:
    """One row per placement of the scenario's artifact on one model."""
    artifact = dict(yaml.safe_load((SCENARIOS / f"{SCENARIO}.yaml").read_text())["artifact"])
    model = load_audit_model(None, model_dir=models / SCENARIO / SCENARIO / method)
    data = load_images(model, model.datalist, "test", max_images, seed, progress=False)
    shape = list(data.images.shape[2:])
    box = resolve_size(check_size(artifact["size"]), shape)  # as the transform reads it
    without = predict(model.network, data.images, model.finishing)
    rows = []
    for axis, offset, start in placements(artifact["position"], box, shape, offsets):
        moved = {**artifact, "position": start}
        effect = pair_effect(data.ids, data.labels, without,
                             predict(model.network, add_artifact(data.images, data.ids, moved, model.injection_seed), model.finishing))  # fmt: skip
        rows.append({
            "scenario": SCENARIO, "method": method, "axis": axis, "offset": offset, "position": " ".join(map(str, start)),
            "box": " ".join(map(str, box)), "n": len(data.ids), "flip_rate": effect["flip_rate"], "mean_prob_shift": effect["mean_prob_shift"],
            "threads": torch.get_num_threads(), "machine": machine(), "seed": training_seed(models, SCENARIO, method),
        })  # fmt: skip
    return rows


def markdown(table: pd.DataFrame) -> str:
    """Flip rate by offset (columns) and axis (rows) for each model."""
    offsets = sorted(set(table.offset))
    lines = ["| model | axis | " + " | ".join(f"{o:+d}" if o else "0" for o in offsets) + " |",
             "| --- | --- |" + " --- |" * len(offsets)]  # fmt: skip
    at_place = table[table.axis == "none"].set_index("method").flip_rate
    for (method, axis), rows in table[table.axis != "none"].groupby(["method", "axis"], sort=False):
        by_offset = {**rows.set_index("offset").flip_rate.to_dict(), 0: at_place[method]}
        cells = " | ".join("-" if o not in by_offset else f"{by_offset[o]:.2f}" for o in offsets)
        lines.append(f"| {method} | {axis} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_placement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="runs/audit_models", help="output of benchmarks/configs/audit_models.yaml")
    parser.add_argument("--methods", nargs="+", default=["erm", "reference"])
    parser.add_argument("--offsets", nargs="+", type=int, default=[-4, -3, -2, -1, 1, 2, 3, 4])
    parser.add_argument("--max-images", type=int, default=100, help="test volumes per model (seeded sub-sample)")
    parser.add_argument("--table", default="benchmarks/results/audit_placement.csv")
    parser.add_argument("--markdown", action="store_true", help="print the table's markdown and exit")
    args = parser.parse_args(argv)
    return table_command(
        Path(args.table), args.markdown, markdown,
        lambda: [row for m in args.methods for row in placement_rows(Path(args.models), m, args.offsets, args.max_images)],
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
