"""Teacher recipes side by side: each variant's teacher trained from one experiment's source model
on the clean teacher subset, evaluated, and scored (bias-free and bias-inverted AUC, counterfactual
ΔTPR, flip rate), one CSV row per (variant, seed), written as each finishes; ``--resume`` reuses
finished variants trained with the same settings.

    python -m benchmarks.teacher_recipes --experiment runs/teacher_seeds/localized2d_default \\
        --scenario localized2d --variants benchmarks/configs/teacher_recipes.yaml \\
        --seeds 0 1 --table benchmarks/results/teacher_recipes.csv --resume

A variant is a mapping of teacher-bundle settings (``{}``: the bundle's defaults).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

from benchmarks.seed_runs import _metrics
from benchmarks.teacher_seeds import _train_and_evaluate, is_done
from pipeline.atomic import atomic_path
from pipeline.evaluation.protocol import counterfactual_delta_tpr, shortcut_verdict

COLUMNS = [
    "scenario", "variant", "seed", "teacher_bias_free_auc", "teacher_bias_inverted_auc", "teacher_cf_delta_tpr",
    "teacher_flip_rate", "erm_bias_free_auc", "verdict", "seconds",
]  # fmt: skip


def load_variants(path: str | Path) -> dict[str, dict]:
    """``name -> settings``; raises ValueError when a variant is not a mapping."""
    variants = yaml.safe_load(Path(path).read_text()) or {}
    bad = [name for name, v in variants.items() if not isinstance(v, dict)]
    if bad:
        raise ValueError(f"{path}: variant(s) {bad} must map teacher-bundle settings to values")
    return variants


def row(scenario: str, variant: str, seed: int, teacher: dict, erm: dict, seconds: float) -> dict:
    """One table row from the teacher's and ERM's ``{test set: metrics}``."""
    cf = counterfactual_delta_tpr(teacher)
    free = teacher["bias_free"]["auc"]
    return {
        "scenario": scenario, "variant": variant, "seed": seed, "teacher_bias_free_auc": free,
        "teacher_bias_inverted_auc": teacher["bias_inverted"]["auc"], "teacher_cf_delta_tpr": cf,
        "teacher_flip_rate": teacher.get("cf_with", {}).get("flip_rate"),
        "erm_bias_free_auc": erm["bias_free"]["auc"],
        "verdict": shortcut_verdict(cf, free, erm["bias_free"]["auc"]), "seconds": round(seconds),
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="experiment folder with the source model and ERM")
    parser.add_argument("--scenario", default="localized2d")
    parser.add_argument("--variants", default="benchmarks/configs/teacher_recipes.yaml")
    parser.add_argument("--only", nargs="+", help="only these variants")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--table", default="benchmarks/results/teacher_recipes.csv")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.experiment).absolute() / args.scenario
    source = root / "source" / "models" / "model.pt"
    if not source.is_file():
        parser.error(f"{source} does not exist: run the experiment with the source method first")
    erm = _metrics(root / "erm")
    variants = load_variants(args.variants)
    rows = pd.read_csv(args.table).to_dict("records") if args.resume and Path(args.table).is_file() else []
    for name, settings in variants.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            start = time.perf_counter()
            run = {"output_root": str(root), "bundle_name": f"recipe_{name}_seed{seed}", "seed": seed,
                   "init_checkpoint": str(source), "tensorboard": False, "progress_bar": False, **settings}  # fmt: skip
            reused = args.resume and is_done("teacher", args.scenario, root, run)
            teacher = _train_and_evaluate("teacher", args.scenario, root, run, args.resume)
            same = [r for r in rows if r["scenario"] == args.scenario and r["variant"] == name and r["seed"] == seed]
            rows = [r for r in rows if not any(r is s for s in same)]
            seconds = same[0]["seconds"] if reused and same else time.perf_counter() - start  # reused: its own time
            rows.append(row(args.scenario, name, seed, teacher, erm, seconds))
            with atomic_path(args.table) as tmp:
                pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False, float_format="%.4f")
            r = rows[-1]
            print(f"{name} seed {seed}: bias-free {r['teacher_bias_free_auc']:.3f}, bias-inverted "
                  f"{r['teacher_bias_inverted_auc']:.3f}, cf ΔTPR {r['teacher_cf_delta_tpr']:.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
