"""The students with and without the teacher's clean images (`clean_role: teacher`), side by side.

Each student distilled with `clean_role: teacher` is paired with the student of the same run
without it (every other training the same, reused): the architectures' rows of
``benchmarks/results/architecture_runs.csv`` (``<run>_clean_localized2d`` against
``<run>_localized2d``) and the `small_cnn` rows of ``benchmarks/results/clean_role_runs.csv``
against the audit's model sets (``benchmarks/results/audit_models*.csv``, same scenario and seed).

    python -m benchmarks.clean_role_table   # the README's table
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
ARCHITECTURE_PAIRS = {
    "compact_teacher_localized2d": "compact_teacher_clean_localized2d",
    "compact_teacher_seed1_localized2d": "compact_teacher_seed1_clean_localized2d",
    "compact_teacher_seed2_localized2d": "compact_teacher_seed2_clean_localized2d",
    "densenet121_localized2d": "densenet121_clean_localized2d",
    "densenet121_seed1_localized2d": "densenet121_seed1_clean_localized2d",
    "densenet121_seed2_localized2d": "densenet121_seed2_clean_localized2d",
}
"""Architecture run without the clean images -> the same run with them."""
STUDENTS = {"compact_teacher": "ResNet-18 (small_cnn teacher)", "densenet121": "DenseNet-121"}


def pairs(results: Path = RESULTS) -> pd.DataFrame:
    """One row per student: its network, scenario and seed, the two runs' rows side by side
    (columns suffixed ``_without`` and ``_with``)."""
    columns = ["scenario", "seed", "gap_closed", "distilled_cf_delta_tpr", "distilled_bias_free_auc", "erm_bias_free_auc", "verdict"]
    architectures = pd.read_csv(results / "architecture_runs.csv").set_index("run")
    rows = []
    for without, with_clean in ARCHITECTURE_PAIRS.items():
        if with_clean in architectures.index:
            network = next(label for key, label in STUDENTS.items() if without.startswith(key))
            rows.append({"student": network, **_side_by_side(architectures.loc[without, columns], architectures.loc[with_clean, columns])})
    clean = pd.read_csv(results / "clean_role_runs.csv").sort_values("seed", kind="stable")
    plain = pd.concat([pd.read_csv(path) for path in sorted(results.glob("audit_models*.csv"))], ignore_index=True)
    for row in clean.itertuples():
        match = plain[(plain.scenario == row.scenario) & (plain.seed == row.seed)]
        if len(match) == 1:
            rows.append({"student": "small_cnn", **_side_by_side(match.iloc[0][columns], pd.Series(row._asdict())[columns])})
    return pd.DataFrame(rows)


def _side_by_side(without: pd.Series, with_clean: pd.Series) -> dict:
    both = {"scenario": without["scenario"], "seed": int(without["seed"]), "erm_bias_free_auc": without["erm_bias_free_auc"]}
    for name in ("gap_closed", "distilled_cf_delta_tpr", "distilled_bias_free_auc", "verdict"):
        both[f"{name}_without"], both[f"{name}_with"] = without[name], with_clean[name]
    return both


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| student | scenario | seed | cf ΔTPR without -> with | gap closed without -> with | bias-free AUC without -> with (ERM's) | verdict without -> with |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.student} | {r.scenario} | {r.seed} | {r.distilled_cf_delta_tpr_without:.2f} -> {r.distilled_cf_delta_tpr_with:.2f} | "
            f"{r.gap_closed_without:.0%} -> {r.gap_closed_with:.0%} | {r.distilled_bias_free_auc_without:.3f} -> "
            f"{r.distilled_bias_free_auc_with:.3f} ({r.erm_bias_free_auc:.3f}) | {r.verdict_without} -> {r.verdict_with} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clean_role_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of the committed tables")
    args = parser.parse_args(argv)
    print(markdown(pairs(Path(args.results))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
