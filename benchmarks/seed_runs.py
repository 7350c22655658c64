"""Training-seed spread of the default experiment: ERM and the distilled student retrained per seed.

For each seed, ERM (baseline bundle) and the distilled student (against the teacher of the
finished experiment, so only the training seed changes) are trained and evaluated into
``<experiment>/<scenario>/seed<N>_<method>``; the reference of the experiment (seed 0) is the
gap's other end. Prints and writes the seed table (``--out``); ``--resume`` reuses finished runs.

    python -m pipeline.experiment                      # seed 0 (make run)
    python -m benchmarks.seed_runs --experiment runs/experiment --seeds 1 2 --resume --out seeds.md

``--retrain-teacher`` also retrains the teacher per seed (from the experiment's source model), so
the spread includes the teacher's: the student's result depends on how its teacher reacts to an
artifact it never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.atomic import write_text
from pipeline.bundles import run_bundle
from pipeline.evaluation.prediction_file import load_predictions
from pipeline.evaluation.protocol import counterfactual_delta_tpr, flip_rate


def _metrics(folder: Path) -> dict:
    """metrics.json of a run, with the flip rate of its counterfactual pairs added."""
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    pairs = [folder / "eval" / f"predictions_{s}.csv" for s in ("cf_with", "bias_free")]
    if all(p.is_file() for p in pairs):
        metrics["flip_rate"] = flip_rate(*(load_predictions(p) for p in pairs))
    return metrics


def _train_and_evaluate(bundle: str, scenario: str, root: Path, name: str, resume: bool, **settings) -> dict:
    if not (resume and (root / name / "eval" / "metrics.json").is_file()):
        settings = {"output_root": str(root), "bundle_name": name, "progress_bar": False, "tensorboard": False, **settings}
        for workflow in ("train", "evaluate"):
            run_bundle(bundle, workflow, scenario, settings=settings, log_config=False)
    return _metrics(root / name)


def run_seed(root: Path, scenario: str, seed: int, resume: bool, retrain_teacher: bool = False) -> dict[str, dict]:
    """Metrics of ERM and the distilled student trained with ``seed``; with ``retrain_teacher``,
    also of a teacher trained with ``seed`` (from the experiment's source model), which the
    student then learns from (``seed<N>_own_teacher_*`` folders)."""
    out = {"erm": _train_and_evaluate("baseline", scenario, root, f"seed{seed}_erm", resume, seed=seed)}
    teacher = root / "teacher" / "models" / "teacher.pt"
    prefix = f"seed{seed}_"
    if retrain_teacher:
        prefix = f"seed{seed}_own_teacher_"
        source = root / "source" / "models" / "model.pt"
        out["teacher"] = _train_and_evaluate(
            "teacher", scenario, root, prefix + "teacher", resume, seed=seed,
            init_checkpoint=str(source) if source.is_file() else None,
        )  # fmt: skip
        teacher = root / (prefix + "teacher") / "models" / "teacher.pt"
    out["distilled"] = _train_and_evaluate(
        "distillation", scenario, root, prefix + "distilled", resume, seed=seed, teacher_checkpoint=str(teacher)
    )
    return out


def row(seed: int, metrics: dict[str, dict], reference: dict) -> dict:
    erm, student, ref = (m["bias_inverted"]["auc"] for m in (metrics["erm"], metrics["distilled"], reference))
    return {
        "seed": seed,
        "erm_bias_inverted_auc": erm,
        "distilled_bias_inverted_auc": student,
        "reference_bias_inverted_auc": ref,
        "gap_closed": (student - erm) / (ref - erm),
        "erm_bias_free_auc": metrics["erm"]["bias_free"]["auc"],
        "distilled_bias_free_auc": metrics["distilled"]["bias_free"]["auc"],
        "erm_delta_tpr_counterfactual": counterfactual_delta_tpr(metrics["erm"]),
        "distilled_delta_tpr_counterfactual": counterfactual_delta_tpr(metrics["distilled"]),
        "distilled_flip_rate": metrics["distilled"].get("flip_rate"),
        "teacher_bias_inverted_auc": metrics["teacher"]["bias_inverted"]["auc"] if "teacher" in metrics else None,
        "teacher_delta_tpr_counterfactual": counterfactual_delta_tpr(metrics["teacher"]) if "teacher" in metrics else None,
    }


def table(rows: list[dict]) -> str:
    teachers = any(r.get("teacher_bias_inverted_auc") is not None for r in rows)
    lines = [
        "| seed | ERM bias-inverted | student bias-inverted | gap closed | ERM bias-free | student bias-free | cf ΔTPR ERM -> student | student flip rate |"
        + (" teacher bias-inverted | teacher cf ΔTPR |" if teachers else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if teachers else ""),
    ]
    for r in rows:
        flip = "" if r["distilled_flip_rate"] is None else f"{r['distilled_flip_rate']:.2f}"
        line = (
            f"| {r['seed']} | {r['erm_bias_inverted_auc']:.3f} | {r['distilled_bias_inverted_auc']:.3f} | "
            f"{r['gap_closed']:.0%} | {r['erm_bias_free_auc']:.3f} | {r['distilled_bias_free_auc']:.3f} | "
            f"{r['erm_delta_tpr_counterfactual']:.2f} -> {r['distilled_delta_tpr_counterfactual']:.2f} | {flip} |"
        )
        if teachers:
            auc, delta = r.get("teacher_bias_inverted_auc"), r.get("teacher_delta_tpr_counterfactual")
            line += f" {auc:.3f} | {delta:.2f} |" if auc is not None else " | |"
        lines.append(line)
    gaps = [r["gap_closed"] for r in rows]
    lines.append(
        f"\nGap closed: mean {sum(gaps) / len(gaps):.0%}, lowest {min(gaps):.0%} over seeds {[r['seed'] for r in rows]}."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment", default="runs/experiment", help="output folder of a finished experiment"
    )
    parser.add_argument("--scenario", default="localized2d")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--resume", action="store_true", help="reuse the evaluations of finished runs")
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument(
        "--retrain-teacher", action="store_true",
        help="also train the teacher with each seed (from the experiment's source model); the student learns from it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    root = Path(args.experiment).absolute() / args.scenario
    reference = _metrics(root / "reference")
    seed0 = ("erm", "distilled", "teacher") if args.retrain_teacher else ("erm", "distilled")
    rows = [row(0, {m: _metrics(root / m) for m in seed0}, reference)]
    for seed in args.seeds:
        rows.append(row(seed, run_seed(root, args.scenario, seed, args.resume, args.retrain_teacher), reference))
        text = table(rows)
        if args.out:
            write_text(text + "\n", args.out)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
