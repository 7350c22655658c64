"""scenario_runs' summary rows: AUCs per method, gap closed, best agnostic baseline, the validity cut-offs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from benchmarks import scenario_runs
from benchmarks.scenario_runs import MAX_REFERENCE_FOOLED, MIN_ERM_GAP, measures_shortcut
from pipeline.experiment import ExperimentConfig

EPS = 1e-9


@pytest.mark.parametrize(
    "erm, reference, bias_free, expected",
    [
        (0.5, 0.5 + MIN_ERM_GAP + EPS, 0.7, True),  # gap just above the cut-off
        (0.5, 0.5 + MIN_ERM_GAP - EPS, 0.7, False),  # just below
        (0.2, 0.8, 0.8 + MAX_REFERENCE_FOOLED - EPS, True),  # reference fooled just under the limit
        (0.2, 0.8, 0.8 + MAX_REFERENCE_FOOLED + EPS, False),  # just over
        (0.2, 0.8, 0.7, True),  # the reference above its bias-free AUC is not fooled
        (0.9, 0.8, 0.8, False),  # ERM above the reference: no shortcut learnt
        (float("nan"), 0.8, 0.8, False),  # a missing AUC measures nothing
    ],
)
def test_measures_shortcut_at_its_cut_offs(erm, reference, bias_free, expected):
    assert measures_shortcut(erm, reference, bias_free) is expected


def _results(rows):
    return pd.DataFrame(
        [{"scenario": s, "method": m, "test_set": t, "auc": auc} for s, m, t, auc in rows]
    )


def _finished_run(tmp_path, rows, acceptance, scenarios):
    report = tmp_path / "run" / "report"
    report.mkdir(parents=True)
    _results(rows).to_csv(report / "results.csv", index=False)
    (report / "acceptance.json").write_text(json.dumps(acceptance))
    return ExperimentConfig(output=str(tmp_path / "run"), scenarios=scenarios, settings={"seed": 7})


def test_one_row_per_scenario_with_its_own_aucs_claims_and_baseline(tmp_path):
    rows = [
        ("localized2d", "erm", "bias_inverted", 0.10),
        ("localized2d", "reference", "bias_inverted", 0.80),
        ("localized2d", "reference", "bias_free", 0.85),
        ("localized2d", "reference", "ood", 0.75),
        ("localized2d", "teacher", "bias_inverted", 0.70),
        ("localized2d", "distilled", "bias_inverted", 0.60),
        ("localized2d", "augmentation", "bias_inverted", 0.30),
        ("localized2d", "jtt", "bias_inverted", 0.45),
        ("localized2d", "jtt", "bias_free", 0.99),  # another test set: not the baseline's AUC
        ("diffuse2d", "erm", "bias_inverted", 0.40),
        ("diffuse2d", "reference", "bias_inverted", 0.50),
        ("diffuse2d", "reference", "bias_free", 0.90),
    ]
    acceptance = {
        "localized2d": {"gap_closed": 0.71, "erm_delta_tpr_counterfactual": 0.9, "distilled_delta_tpr_counterfactual": -0.1}
    }
    config = _finished_run(tmp_path, rows, acceptance, ["localized2d", "diffuse2d"])
    local, diffuse = scenario_runs.summary_rows("core", config, 12.6)
    assert local["run"] == "core" and local["scenario"] == "localized2d"
    assert local["seconds"] == 13 and local["seed"] == 7 and local["threads"] == torch.get_num_threads()
    assert [local[f"{m}_bias_inverted_auc"] for m in ("erm", "reference", "teacher", "distilled")] == [
        0.10, 0.80, 0.70, 0.60
    ]
    assert local["reference_bias_free_auc"] == 0.85 and local["reference_ood_auc"] == 0.75
    assert local["best_agnostic_baseline_auc"] == 0.45  # the better of augmentation and JTT
    assert local["measures_shortcut"] is True  # gap 0.70, reference 0.05 below its bias-free AUC
    assert (local["gap_closed"], local["erm_cf_delta_tpr"], local["distilled_cf_delta_tpr"]) == (0.71, 0.9, -0.1)
    # the second scenario: no teacher, student, baselines or claims; gap 0.1 and a fooled reference
    assert diffuse["scenario"] == "diffuse2d" and diffuse["erm_bias_inverted_auc"] == 0.40
    assert all(
        math.isnan(diffuse[k])
        for k in ("teacher_bias_inverted_auc", "distilled_bias_inverted_auc", "reference_ood_auc", "best_agnostic_baseline_auc")
    )
    assert diffuse["measures_shortcut"] is False
    assert diffuse["gap_closed"] is None and diffuse["distilled_cf_delta_tpr"] is None


def test_a_single_agnostic_baseline_is_the_best_one(tmp_path):
    rows = [("localized2d", "augmentation", "bias_inverted", 0.33), ("localized2d", "erm", "bias_inverted", 0.2)]
    config = _finished_run(tmp_path, rows, {}, ["localized2d"])
    (row,) = scenario_runs.summary_rows("aug", config, 1.0)
    assert row["best_agnostic_baseline_auc"] == 0.33
    assert math.isnan(row["reference_bias_inverted_auc"]) and row["measures_shortcut"] is False


def test_baseline_columns_read_the_counterfactual_tpr_gap_of_that_method():
    rows = [
        {"method": "clean_images", "test_set": "bias_inverted", "auc": 0.67, "tpr_bias1": None, "tpr_bias0": None},
        {"method": "clean_images", "test_set": "bias_free", "auc": 0.96, "tpr_bias1": None, "tpr_bias0": 0.70},
        {"method": "clean_images", "test_set": "cf_with", "auc": 0.95, "tpr_bias1": 0.98, "tpr_bias0": None},
        {"method": "clean_images", "test_set": "cf_without", "auc": 0.96, "tpr_bias1": None, "tpr_bias0": 0.71},
        {"method": "erm", "test_set": "cf_with", "auc": 0.9, "tpr_bias1": 1.0, "tpr_bias0": None},
    ]
    part = pd.DataFrame(rows).set_index(["method", "test_set"])
    columns = scenario_runs.baseline_columns(part, "clean_images")
    assert columns["clean_images_bias_inverted_auc"] == 0.67 and columns["clean_images_bias_free_auc"] == 0.96
    assert columns["clean_images_cf_delta_tpr"] == pytest.approx(0.98 - 0.71)
    assert all(math.isnan(v) for v in scenario_runs.baseline_columns(part, "jtt").values())
