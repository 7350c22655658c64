"""Sweep of specialist-teacher recipes on the embedded data: which teacher to make the default.

Trains the teacher bundle once per variant (from scratch; each on the clean `teacher` subset)
and evaluates it; prints bias-free and bias-inverted AUC per variant. The table in
bundles/teacher/docs/README.md comes from here:

    python benchmarks/sweep_teacher.py --output runs/teacher_sweep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.bundles import run_bundle

NO_AFFINE = [
    {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
    {"_target_": "RandScaleIntensityd", "keys": "image", "factors": 0.15, "prob": 0.8},
    {"_target_": "RandShiftIntensityd", "keys": "image", "offsets": 0.1, "prob": 0.8},
    {"_target_": "RandGaussianNoised", "keys": "image", "std": 0.03, "prob": 0.5},
]
VARIANTS = {
    "strong augmentation, 40 epochs": {},
    "no affine augmentation": {"augmentation": NO_AFFINE},
    "no augmentation": {"augmentation": []},
    "compact network (8-64 channels)": {"network_options": {"channels": [8, 16, 32, 64]}},
    "strong augmentation, 80 epochs": {"max_epochs": 80, "early_stop_patience": 80},
    "strong augmentation, 1,000 clean images": {
        "data_params": {"n": 5000, "size": 64, "flavour": "thorax", "teacher_size": 1000}
    },
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/teacher_sweep")
    parser.add_argument("--scenario", default="localized2d")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    root = Path(args.output).absolute()
    rows = {}
    for name in args.variants:
        folder = "teacher_" + "".join(c if c.isalnum() else "_" for c in name)
        settings = {"output_root": str(root), "bundle_name": folder, "progress_bar": False,
                    "tensorboard": False, "probe_epochs": 1, **VARIANTS[name]}  # fmt: skip
        for workflow in ("train", "evaluate"):
            run_bundle("teacher", workflow, args.scenario, settings=settings)
        metrics = json.loads((root / folder / "eval" / "metrics.json").read_text())
        rows[name] = {k: metrics[k]["auc"] for k in ("bias_free", "bias_inverted")}
        print(name, rows[name], flush=True)
    print("| teacher recipe | bias-free AUC | bias-inverted AUC |\n| --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['bias_free']:.3f} | {row['bias_inverted']:.3f} |")
    (root / "sweep_teacher.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
