"""Sweep of specialist-teacher recipes on the embedded data: which teacher to make the default.

Trains the teacher bundle once per variant (each on the clean `teacher` subset; from scratch,
or after self-supervised pretraining with bundles/teacher/configs/pretrain.yaml) and evaluates
it; prints bias-free and bias-inverted AUC and the wall time per variant. The table in
bundles/teacher/docs/README.md comes from here:

    python benchmarks/sweep_teacher.py --output runs/teacher_sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.bundles import BUNDLES_ROOT, run_bundle

PRETRAIN = BUNDLES_ROOT / "teacher" / "configs" / "pretrain.yaml"

NO_AFFINE = [
    {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
    {"_target_": "RandScaleIntensityd", "keys": "image", "factors": 0.15, "prob": 0.8},
    {"_target_": "RandShiftIntensityd", "keys": "image", "offsets": 0.1, "prob": 0.8},
    {"_target_": "RandGaussianNoised", "keys": "image", "std": 0.03, "prob": 0.5},
]
# the first pretraining setting tried: SimCLR-strength views (its loss stayed at chance level)
STRONG_VIEWS = [
    {
        "_target_": "RandScaleCropd",
        "keys": "image",
        "roi_scale": 0.5,
        "max_roi_scale": 1.0,
        "random_size": True,
    },
    {"_target_": "Resized", "keys": "image", "spatial_size": "@image_size", "mode": "bilinear"},
    {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
    {"_target_": "RandAdjustContrastd", "keys": "image", "gamma": [0.7, 1.5], "prob": 0.5},
    {"_target_": "RandScaleIntensityd", "keys": "image", "factors": 0.3, "prob": 0.8},
    {"_target_": "RandShiftIntensityd", "keys": "image", "offsets": 0.2, "prob": 0.8},
    {"_target_": "RandGaussianNoised", "keys": "image", "std": 0.05, "prob": 0.5},
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
    "self-supervised pretraining on the training images": {},  # configs/pretrain.yaml as it is
    # diagnostic, not a recipe (users do not have the images without the artifact)
    "self-supervised pretraining on the training images without the artifact": {
        "pretrain_bias_mode": "never"
    },
    "self-supervised pretraining on the training images, strong views, 10 epochs": {
        "pretrain_augmentation": STRONG_VIEWS,
        "pretrain_epochs": 10,
        "pretrain_batch_size": 128,
        "pretrain_learning_rate": 0.001,
        "pretrain_temperature": 0.5,
    },
}
# started from the source model of a finished experiment (--source-checkpoint)
FROM_SOURCE = "from the source model (external labelled data, no artifact), strong augmentation"
VARIANTS[FROM_SOURCE] = {}
# override files merged into a variant's training config (after the scenario)
OVERRIDES = {name: [PRETRAIN] for name in VARIANTS if name.startswith("self-supervised pretraining")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/teacher_sweep")
    parser.add_argument("--scenario", default="localized2d")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--source-checkpoint",
        default="runs/experiment/localized2d/source/models/model.pt",
        help="source model for the variant that starts from it (python -m pipeline.experiment trains it)",
    )
    args = parser.parse_args(argv)
    root = Path(args.output).absolute()
    rows = {}
    for name in args.variants:
        folder = "teacher_" + "".join(c if c.isalnum() else "_" for c in name)
        settings = {"output_root": str(root), "bundle_name": folder, "progress_bar": False,
                    "tensorboard": False, "probe_epochs": 1, **VARIANTS[name]}  # fmt: skip
        if name == FROM_SOURCE:
            settings["init_checkpoint"] = str(Path(args.source_checkpoint).absolute())
        start = time.perf_counter()
        run_bundle("teacher", "train", args.scenario, overrides=OVERRIDES.get(name, ()), settings=settings)
        run_bundle("teacher", "evaluate", args.scenario, settings=settings)
        metrics = json.loads((root / folder / "eval" / "metrics.json").read_text())
        rows[name] = {k: metrics[k]["auc"] for k in ("bias_free", "bias_inverted")}
        rows[name]["minutes"] = (time.perf_counter() - start) / 60
        print(name, rows[name], flush=True)
    print("| teacher recipe | bias-free AUC | bias-inverted AUC | minutes |\n| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['bias_free']:.3f} | {row['bias_inverted']:.3f} | {row['minutes']:.1f} |")
    write_json(rows, root / "sweep_teacher.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
