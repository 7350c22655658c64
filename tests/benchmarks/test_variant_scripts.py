"""The per-variant measurement scripts: overrides, folder names, selection rules and tables."""

from __future__ import annotations

import pytest

from benchmarks.diagnose_distillation import SELECTIONS, selected, tables
from benchmarks.seed_runs import row, table
from benchmarks.variant_runs import parse_overrides, variant_folder


def test_overrides_are_json_or_text_and_need_an_equals_sign():
    assert parse_overrides(
        [
            "task_weight=0.5",
            "init_from_teacher=false",
            "student_probes=teacher",
            'stage_pairs=[["stage1", "stage1"]]',
        ]
    ) == {  # fmt: skip
        "task_weight": 0.5,
        "init_from_teacher": False,
        "student_probes": "teacher",
        "stage_pairs": [["stage1", "stage1"]],
    }
    with pytest.raises(SystemExit, match="key=value"):
        parse_overrides(["task_weight"])


def test_variant_folder_names_are_filesystem_safe():
    assert (
        variant_folder("diag_", "from the teacher, CE 0.3 (default)")
        == "diag_from_the_teacher__CE_0_3__default_"
    )


def _epochs():
    return [
        {"epoch": 1, "val_auc": 0.99, "val_agreement": -0.5, "clean_auc": 0.8, "bias_inverted_auc": 0.3,
         "bias_free_auc": 0.7, "cf_delta_tpr": 0.6},
        {"epoch": 2, "val_auc": 0.95, "val_agreement": -0.1, "clean_auc": 0.8, "bias_inverted_auc": 0.9,
         "bias_free_auc": 0.85, "cf_delta_tpr": 0.1},
    ]  # fmt: skip


def test_selection_rules_read_only_their_signal():
    rows = _epochs()
    assert selected(rows, SELECTIONS["final epoch"])["epoch"] == 2
    assert selected(rows, SELECTIONS["best biased val AUC"])["epoch"] == 1
    assert selected(rows, SELECTIONS["best teacher agreement (val)"])["epoch"] == 2
    assert selected(rows, SELECTIONS["best clean held-out AUC"])["epoch"] == 1  # ties: the first


def test_diagnosis_table_reports_gap_closed_per_selection():
    result = {"variant": "v", "epochs": _epochs(), "teacher": {"bias_inverted_auc": 0.9, "bias_free_auc": 0.8,
              "cf_delta_tpr": -0.1}, "teacher_as_trained": {"auc": 0.7, "delta_tpr": -0.2, "items": 10}}  # fmt: skip
    text = tables([result], {"erm": 0.1, "reference": 0.9})
    assert "| v | final epoch | 2 | 0.900 | 0.850 | 0.10 | 100% |" in text
    assert "| v | best biased val AUC | 1 | 0.300 | 0.700 | 0.60 | 25% |" in text


def test_seed_row_and_table():
    def metrics(inverted, free, with_tpr, without_tpr, flip=None):
        out = {"bias_inverted": {"auc": inverted}, "bias_free": {"auc": free, "tpr_bias0": without_tpr},
               "cf_with": {"tpr_bias1": with_tpr}}  # fmt: skip
        if flip is not None:
            out["flip_rate"] = flip
        return out

    r = row(1, {"erm": metrics(0.2, 0.9, 1.0, 0.2), "distilled": metrics(0.8, 0.88, 0.7, 0.6, 0.1)},
            metrics(0.9, 0.95, 0.8, 0.7))  # fmt: skip
    assert r["gap_closed"] == pytest.approx(6 / 7)
    assert r["distilled_delta_tpr_counterfactual"] == pytest.approx(0.1)
    text = table([r])
    assert "| 1 | 0.200 | 0.800 | 86% |" in text and "0.80 -> 0.10 | 0.10 |" in text
    assert "mean 86%, lowest 86%" in text and "teacher" not in text
    # with a retrained teacher, its bias-inverted AUC and counterfactual ΔTPR join the row
    with_teacher = row(2, {"erm": metrics(0.2, 0.9, 1.0, 0.2), "distilled": metrics(0.8, 0.88, 0.7, 0.6),
                           "teacher": metrics(0.95, 0.85, 0.3, 0.6)}, metrics(0.9, 0.95, 0.8, 0.7))  # fmt: skip
    assert with_teacher["teacher_delta_tpr_counterfactual"] == pytest.approx(-0.3)
    text = table([r, with_teacher])
    assert "teacher cf ΔTPR |" in text and text.splitlines()[3].endswith("| 0.950 | -0.30 |")
    assert text.splitlines()[2].endswith("| | |")


def test_variant_table_replaces_only_the_same_scenario_and_variant(tmp_path):
    from benchmarks.sweep_distillation_stages import merge_table

    path = tmp_path / "partial.csv"
    merge_table(path, "localized2d", {"erm": {"bias_inverted_auc": 0.2}, "early": {"bias_inverted_auc": 0.5}})
    merge_table(path, "diffuse2d", {"erm": {"bias_inverted_auc": 0.4}})
    table = merge_table(path, "localized2d", {"erm": {"bias_inverted_auc": 0.3}})
    assert sorted(zip(table["scenario"], table["variant"], table["bias_inverted_auc"])) == [
        ("diffuse2d", "erm", 0.4),
        ("localized2d", "early", 0.5),
        ("localized2d", "erm", 0.3),
    ]
    assert list(path.parent.iterdir()) == [path]  # written whole, no temporary file left
    other = tmp_path / "other.csv"
    other.write_text("run,auc\na,0.5\n")
    with pytest.raises(ValueError, match=r"other.csv.*\['scenario', 'variant'\]"):
        merge_table(other, "localized2d", {"erm": {"bias_inverted_auc": 0.3}})
    assert other.read_text() == "run,auc\na,0.5\n"  # left as it was
