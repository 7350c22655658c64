"""The teacher-recipe table: each variant's teacher scored against ERM, variants file checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import teacher_recipes


def test_row_scores_the_teacher_against_erm():
    teacher = {"bias_free": {"auc": 0.926, "tpr_bias0": 0.60}, "bias_inverted": {"auc": 0.913},
               "cf_with": {"tpr_bias1": 0.64, "flip_rate": 0.03}}  # fmt: skip
    erm = {"bias_free": {"auc": 0.876}}
    row = teacher_recipes.row("localized2d", "flip_final", 1, teacher, erm, 61.6)
    assert list(row) == teacher_recipes.COLUMNS
    assert row["teacher_cf_delta_tpr"] == pytest.approx(0.04) and row["verdict"] == "removed"
    assert row["seconds"] == 62 and row["seed"] == 1
    weak = {**teacher, "bias_free": {"auc": 0.80, "tpr_bias0": 0.60}}
    assert teacher_recipes.row("s", "v", 0, weak, erm, 1.0)["verdict"] == "finding lost"


def test_variants_must_be_mappings(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("a: {}\nb: [1, 2]\n")
    with pytest.raises(ValueError, match=r"variant\(s\) \['b'\]"):
        teacher_recipes.load_variants(path)


def test_committed_variants_file_loads():
    variants = teacher_recipes.load_variants(Path(teacher_recipes.__file__).parent / "configs" / "teacher_recipes.yaml")
    assert variants["default"] == {} and variants["flip_final"]["teacher_selection"] == "final"
