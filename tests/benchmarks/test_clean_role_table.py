"""The clean-role comparison pairs each student with the same run's student without the clean images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks import clean_role_table

REPO = Path(__file__).resolve().parents[2]


def _row(run, scenario="localized2d", seed=0, cf=0.1, verdict="kept"):
    return {"run": run, "scenario": scenario, "seed": seed, "gap_closed": 0.85, "distilled_cf_delta_tpr": cf,
            "distilled_bias_free_auc": 0.9, "erm_bias_free_auc": 0.88, "verdict": verdict}  # fmt: skip


def test_pairs_match_runs_and_scenario_seeds(tmp_path):
    pd.DataFrame([_row("densenet121_localized2d", cf=0.12), _row("densenet121_clean_localized2d", cf=0.08, verdict="removed"),
                  _row("compact_teacher_localized2d")]).to_csv(tmp_path / "architecture_runs.csv", index=False)  # fmt: skip
    pd.DataFrame([_row("diffuse2d_seed1_clean", "diffuse2d", 1, 0.02, "removed")]).to_csv(tmp_path / "clean_role_runs.csv", index=False)
    pd.DataFrame([_row("diffuse2d", "diffuse2d", 0, 0.5), _row("diffuse2d", "diffuse2d", 1, 0.04)]).to_csv(
        tmp_path / "audit_models_seed1.csv", index=False
    )
    table = clean_role_table.pairs(tmp_path)
    assert list(table.student) == ["DenseNet-121", "small_cnn"]  # the compact row has no clean twin yet
    assert list(table.distilled_cf_delta_tpr_without) == [0.12, 0.04] and list(table.distilled_cf_delta_tpr_with) == [0.08, 0.02]
    text = clean_role_table.markdown(table)
    assert "| DenseNet-121 | localized2d | 0 | 0.12 -> 0.08 | 85% -> 85% | 0.900 -> 0.900 (0.880) | kept -> removed |" in text


def test_the_readme_table_is_what_the_committed_tables_render():
    table = clean_role_table.markdown(clean_role_table.pairs())
    assert "\n".join("  " + line for line in table.splitlines()) in (REPO / "README.md").read_text()
