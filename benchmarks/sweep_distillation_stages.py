"""Sweep of distilled stages and weights: which layers must be distilled to remove a shortcut.

Runs the distillation bundle (train + evaluate) once per variant against the teacher of a
finished experiment, and prints bias-inverted AUC and ΔTPR per variant next to ERM and the
reference of that experiment. The table in README.md ("Choosing the stages") comes from here:

    python -m pipeline.experiment --methods erm reference teacher distilled   # once
    python -m benchmarks.sweep_distillation_stages --experiment runs/experiment

`--partial-layers` runs only the partial-layer ablation (none, early, late, all stages, each
without and with the logit term; all stages with it is the experiment's student); `--resume`
skips variants already trained and evaluated with the same settings; `--table` writes the rows
as CSV, replacing the rows of the same scenario and variant and keeping the others:

    python -m benchmarks.sweep_distillation_stages --experiment runs/scenarios/localized3d \
        --scenario localized3d --partial-layers --resume --table benchmarks/results/distillation_variants.csv
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmarks.variant_runs import parse_overrides, variant_folder, variant_parser
from pipeline.atomic import atomic_path, write_json
from pipeline.bundles import run_bundle

STAGES = ["stage1", "stage2", "stage3", "stage4"]
ALL = [[s, s] for s in STAGES]
# The first group varies how the student learns (new settings; stages and weights at their
# defaults); the rest vary stages and weights as the sweep always did. The tables in
# bundles/distillation/docs that predate the `task_weight`/`init_from_teacher` defaults ran with
# `--set task_weight=1.0 init_from_teacher=false`.
VARIANTS = {
    "default (from the teacher, CE 0.5)": {},
    "random init, CE 1 (the previous default)": {"init_from_teacher": False, "task_weight": 1.0},
    "random init, CE 0.5": {"init_from_teacher": False},
    "from the teacher, CE 0.3": {"task_weight": 0.3},
    "from the teacher, CE 1": {"task_weight": 1.0},
    "from the teacher, no CE": {"task_weight": 0.0},
    "from the teacher, CE 1 ramped over 3 epochs": {"task_weight": 1.0, "task_ramp_epochs": 3},
    "from the teacher, CE 0.5, T=4": {"temperature": 4.0},
    "from the teacher, CE 0.5, 12 epochs": {"max_epochs": 12},
    "stages 1-4, w=1, logits 1": {"stage_pairs": ALL, "stage_weights": 1.0, "logit_weight": 1.0},
    "stages 1-4, w=10, logits 1": {"stage_pairs": ALL, "stage_weights": 10.0, "logit_weight": 1.0},
    "stages 1-4, w=1, logits 5": {"stage_pairs": ALL, "stage_weights": 1.0, "logit_weight": 5.0},
    "stages 1-4, w=10, logits 5": {"stage_pairs": ALL, "stage_weights": 10.0, "logit_weight": 5.0},
    "stages 2-4, w=10, logits 5": {"stage_pairs": ALL[1:], "stage_weights": 10.0, "logit_weight": 5.0},
    "stages 1-4, w=10, no logits": {"stage_pairs": ALL, "stage_weights": 10.0, "logit_weight": 0.0},
    "logits only, 20": {"stage_pairs": ALL[3:], "stage_weights": 0.0, "logit_weight": 20.0},
    "stages 1-4, w=10, logits 10": {"stage_pairs": ALL, "stage_weights": 10.0, "logit_weight": 10.0},
    "stages 1-4, w=20, logits 10": {"stage_pairs": ALL, "stage_weights": 20.0, "logit_weight": 10.0},
    "stages 1-4, w=10, logits 20": {"stage_pairs": ALL, "stage_weights": 10.0, "logit_weight": 20.0},
    "teacher probes 1-4, w=10, logits 5": {
        "stage_pairs": ALL,
        "stage_weights": 10.0,
        "logit_weight": 5.0,
        "student_probes": "teacher",
    },
    "label-fitted student probes 1-4, w=10, logits 5": {
        "stage_pairs": ALL,
        "stage_weights": 10.0,
        "logit_weight": 5.0,
        "student_probes": "labels",
    },
    "label-fitted student probes 1-4, w=1, logits 5": {
        "stage_pairs": ALL,
        "stage_weights": 1.0,
        "logit_weight": 5.0,
        "student_probes": "labels",
    },
    "label-fitted student probes 1-4, w=1, logits 1": {
        "stage_pairs": ALL,
        "stage_weights": 1.0,
        "logit_weight": 1.0,
        "student_probes": "labels",
    },
    "feature MSE (FitNets) 1-4, w=1, logits 5": {
        "distill_kind": "feature_mse",
        "stage_pairs": ALL,
        "stage_weights": 1.0,
        "logit_weight": 5.0,
    },
    "feature MSE (FitNets) 1-4, w=10, logits 5": {
        "distill_kind": "feature_mse",
        "stage_pairs": ALL,
        "stage_weights": 10.0,
        "logit_weight": 5.0,
    },
    "attention 1-4, w=100, logits 5": {
        "distill_kind": "attention",
        "stage_pairs": ALL,
        "stage_weights": 100.0,
        "logit_weight": 5.0,
    },
    # partial-layer ablation (the paper's): which stages must be distilled, without the logit term;
    # "none" is the control: the student starts from the teacher and learns the biased labels only
    "partial: none (the teacher's weights, labels only)": {
        "stage_pairs": ALL[3:],
        "stage_weights": 0.0,
        "logit_weight": 0.0,
    },
    "partial: early stages 1-2, no logits": {"stage_pairs": ALL[:2], "logit_weight": 0.0},
    "partial: late stages 3-4, no logits": {"stage_pairs": ALL[2:], "logit_weight": 0.0},
    "partial: all stages 1-4, no logits": {"stage_pairs": ALL, "logit_weight": 0.0},
    # the same with the logit term (all stages with logits is the default: the experiment's student)
    "partial: logits only": {"stage_pairs": ALL[3:], "stage_weights": 0.0},
    "partial: early stages 1-2 + logits": {"stage_pairs": ALL[:2]},
    "partial: late stages 3-4 + logits": {"stage_pairs": ALL[2:]},
}
PARTIAL_LAYERS = [name for name in VARIANTS if name.startswith("partial:")]


def _metrics(folder: Path) -> dict:
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    return {
        "bias_inverted_auc": metrics["bias_inverted"]["auc"],
        "bias_free_auc": metrics["bias_free"]["auc"],
        "delta_tpr": metrics["in_distribution"]["delta_tpr"],
    }


def merge_table(path: Path, scenario: str, rows: dict[str, dict]) -> pd.DataFrame:
    """Write ``rows`` (variant -> metrics) into the table at ``path`` as ``scenario``'s, replacing the
    rows of the same scenario and variant and keeping all others; returns the table.

    Raises:
        ValueError: ``path`` exists but has no scenario and variant columns.
    """
    table = pd.DataFrame([{"scenario": scenario, "variant": name, **row} for name, row in rows.items()])
    if path.is_file():
        previous = pd.read_csv(path)
        missing = sorted({"scenario", "variant"} - set(previous.columns))
        if missing:
            raise ValueError(f"--table '{path}' lacks the column(s) {missing}: not a table of this sweep")
        replaced = (previous["scenario"] == scenario) & previous["variant"].isin(list(rows))
        table = pd.concat([previous[~replaced], table], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return table


def main(argv=None) -> int:
    parser = variant_parser(__doc__.split("\n\n")[0], VARIANTS)
    parser.add_argument("--partial-layers", action="store_true", help="only the partial-layer ablation variants")
    parser.add_argument("--resume", action="store_true", help="skip variants already run with the same settings")
    parser.add_argument("--table", help="CSV of the rows (scenario, variant, metrics); other rows are kept")
    args = parser.parse_args(argv)
    if args.partial_layers:
        args.variants = PARTIAL_LAYERS
    root = Path(args.experiment).absolute() / args.scenario
    extra = parse_overrides(args.set)
    rows = {
        name: _metrics(root / name)
        for name in ("erm", "reference", "teacher", "distilled")
        if (root / name / "eval").is_dir()
    }
    for name in args.variants:
        folder = variant_folder("sweep_", name)
        settings = {"output_root": str(root), "bundle_name": folder, "progress_bar": False, "tensorboard": False,
                    **VARIANTS[name], **extra}  # fmt: skip
        record = root / folder / "sweep_settings.json"
        if not (args.resume and record.is_file() and json.loads(record.read_text()) == settings):
            for workflow in ("train", "evaluate"):
                run_bundle("distillation", workflow, args.scenario, settings=settings)
            write_json(settings, record)
        rows[name] = _metrics(root / folder)
    print("| variant | bias-inverted AUC | bias-free AUC | ΔTPR |\n| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['bias_inverted_auc']:.3f} | {row['bias_free_auc']:.3f} | {row['delta_tpr']:.2f} |"
        )
    write_json(rows, root / "sweep_distillation.json")
    if args.table:
        merge_table(Path(args.table), args.scenario, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
