"""The protocol: one definition of the test sets; a run's numbers computed once, equal to a recomputation."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import protocol
from pipeline.evaluation.metrics import UndefinedMetricWarning


def _write(folder, name, bias, seed):
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], 20)
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(40)], "label": labels, "bias": bias(labels),
                          "prob": np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 40), 0, 1)})  # fmt: skip
    frame.to_csv(folder / f"predictions_{name}.csv", index=False)
    return folder / f"predictions_{name}.csv"


def test_named_test_sets_read_the_test_role_from_the_setting():
    sets = protocol.named_test_sets("holdout")
    assert list(sets) == ["in_distribution", "bias_free", "bias_inverted", "cf_with", "ood"]
    assert sets["bias_inverted"] == {"role": "holdout", "mode": "inverted"}
    assert sets["ood"] == {"role": "test_ood", "mode": "as_trained"}


def test_written_results_equal_a_recomputation_from_the_files(tmp_path):
    files = {
        "in_distribution": _write(tmp_path, "in_distribution", lambda y: y, 0),
        "bias_free": _write(tmp_path, "bias_free", np.zeros_like, 1),
        "cf_with": _write(tmp_path, "cf_with", np.ones_like, 2),
    }
    rows = protocol.write_results(tmp_path, files)
    assert [row["test_set"] for row in rows] == ["in_distribution", "bias_free", "cf_with", "cf_without"]
    assert (
        rows[3]["predictions"] == "predictions_bias_free.csv"
        and rows[2]["pair_predictions"] == rows[3]["predictions"]
    )
    assert rows[2]["flip_rate"] == rows[3]["flip_rate"] and not np.isnan(rows[2]["flip_rate"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == list(files) and tuple(metrics["bias_free"]) == protocol.NUMBER_COLUMNS
    assert metrics["cf_with"]["flip_rate"] == rows[2]["flip_rate"]
    runs = [
        {"scenario": "s", "method": "m", "test_set": r["test_set"], "predictions": r["predictions"]}
        for r in rows
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        recomputed = protocol.results_table(runs, tmp_path)
    read = protocol.results_frame(
        {"scenario": "s", "method": "m", **r} for r in protocol.read_results(tmp_path)
    )
    for column in protocol.NUMBER_COLUMNS:
        np.testing.assert_array_equal(read[column].to_numpy(float), recomputed[column].to_numpy(float))
    assert read["predictions"].iloc[0] == str(tmp_path.absolute() / "predictions_in_distribution.csv")


def test_read_results_without_an_evaluation_says_so(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="results.json does not exist: run the bundle's evaluate workflow"
    ):
        protocol.read_results(tmp_path)


def test_gap_closed_and_acceptance():
    assert protocol.gap_closed(0.2, 0.9, 0.8) == pytest.approx(6 / 7)
    assert protocol.gap_closed(0.5, 0.5, 0.8) is None
    # a reference below ERM (prebiased3d's, at chance) leaves no gap: not a negative share
    assert protocol.gap_closed(0.711, 0.584, 0.817) is None
    assert protocol.gap_closed(0.5, 0.50001, 0.5) == pytest.approx(0.0)
    sets = {"bias_inverted": {"auc": 0.3}, "bias_free": {"auc": 0.8, "tpr_bias0": 0.5},
            "in_distribution": {"delta_tpr": 0.4}, "cf_with": {"tpr_bias1": 0.9}}  # fmt: skip
    reference = {**sets, "bias_inverted": {"auc": 0.9}}
    distilled = {**sets, "bias_inverted": {"auc": 0.75}}
    assert protocol.acceptance({"erm": sets}) is None
    entry = protocol.acceptance({"erm": sets, "reference": reference, "distilled": distilled})
    assert entry["erm_gap"] == pytest.approx(0.6) and entry["gap_closed"] == pytest.approx(0.75)
    assert entry["erm_delta_tpr_counterfactual"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("cf", "bias_free", "verdict"),
    [
        (0.0, 0.88, "removed"),
        (-0.10, 0.86, "removed"),  # both bounds are inclusive
        (0.10, 0.86, "removed"),
        (-0.11, 0.95, "over-corrected"),  # reversed reliance is never a success, however good otherwise
        (0.11, 0.95, "kept"),
        (0.05, 0.859, "finding lost"),  # more than 0.02 below ERM's 0.88
        (None, 0.88, "n/a"),
        (float("nan"), 0.88, "n/a"),
    ],
)
def test_shortcut_verdict_is_symmetric_in_the_counterfactual_delta_tpr(cf, bias_free, verdict):
    assert protocol.shortcut_verdict(cf, bias_free, 0.88) == verdict


def test_shortcut_verdict_takes_another_bias_free_tolerance():
    assert protocol.shortcut_verdict(0.0, 0.855, 0.88, max_bias_free_loss=0.03) == "removed"
    assert protocol.shortcut_verdict(0.0, 0.845, 0.88, max_bias_free_loss=0.03) == "finding lost"


def test_acceptance_scores_teacher_and_student_honestly():
    erm = {"bias_inverted": {"auc": 0.2}, "bias_free": {"auc": 0.88, "tpr_bias0": 0.4},
           "in_distribution": {"delta_tpr": 0.8}, "cf_with": {"tpr_bias1": 0.9, "flip_rate": 0.7}}  # fmt: skip
    reference = {**erm, "bias_inverted": {"auc": 0.9}}
    # the teacher closes more than the whole gap, but only because it lowers its output on the artifact
    teacher = {"bias_inverted": {"auc": 0.95}, "bias_free": {"auc": 0.84, "tpr_bias0": 0.6},
               "in_distribution": {"delta_tpr": -0.2}, "cf_with": {"tpr_bias1": 0.3, "flip_rate": 0.3}}  # fmt: skip
    student = {"bias_inverted": {"auc": 0.83}, "bias_free": {"auc": 0.87, "tpr_bias0": 0.6},
               "in_distribution": {"delta_tpr": 0.05}, "cf_with": {"tpr_bias1": 0.65, "flip_rate": 0.05}}  # fmt: skip
    entry = protocol.acceptance(
        {"erm": erm, "reference": reference, "teacher": teacher, "distilled": student}
    )
    assert entry["teacher_gap_closed"] == pytest.approx(0.75 / 0.7)
    assert entry["teacher_delta_tpr_counterfactual"] == pytest.approx(-0.3)
    assert entry["teacher_verdict"] == "over-corrected"
    assert (
        entry["distilled_gap_closed"] == pytest.approx(0.9)
        and entry["gap_closed"] == entry["distilled_gap_closed"]
    )
    assert entry["distilled_delta_tpr_counterfactual"] == pytest.approx(0.05)
    assert entry["distilled_flip_rate"] == pytest.approx(0.05) and entry["distilled_verdict"] == "removed"
    assert entry["erm_bias_free_auc"] == pytest.approx(0.88)


def test_acceptance_without_a_bias_inverted_set_is_none_not_a_key_error():
    sets = {"bias_free": {"auc": 0.8}, "in_distribution": {"auc": 0.9}}
    assert protocol.acceptance({"erm": sets, "reference": sets}) is None


# 8 predictions by hand: label x bias groups of two, class 1 at prob >= 0.5
HAND = pd.DataFrame({
    "id": [f"h{i}" for i in range(8)],
    "label": [0, 0, 0, 0, 1, 1, 1, 1],
    "bias": [0, 0, 1, 1, 0, 0, 1, 1],
    "prob": [0.1, 0.6, 0.7, 0.8, 0.4, 0.3, 0.9, 0.55],
})  # fmt: skip


def test_summarize_against_hand_counted_rates():
    s = protocol.summarize(HAND, n_boot=50, seed=0)
    assert (s["n"], s["n_positive"], s["n_negative"], s["n_bias"]) == (8, 4, 4, 4)
    # predictions 0 1 1 1 | 0 0 1 1: correct 1 of 4 negatives, 2 of 4 positives
    assert s["accuracy"] == pytest.approx(3 / 8)
    assert (s["tpr"], s["fpr"]) == (pytest.approx(0.5), pytest.approx(0.75))
    assert (s["tpr_bias0"], s["tpr_bias1"], s["fpr_bias0"], s["fpr_bias1"]) == (0.0, 1.0, 0.5, 1.0)
    assert (s["delta_tpr"], s["delta_fpr"]) == (pytest.approx(1.0), pytest.approx(0.5))
    groups = [s[f"acc_label{y}_bias{b}"] for y in (0, 1) for b in (0, 1)]
    assert groups == [0.5, 0.0, 0.0, 1.0] and s["worst_group_accuracy"] == 0.0
    # AUC: of the 16 (positive, negative) pairs, 7 ordered (0.4 > 0.1, 0.3 > 0.1, 0.9 > all 4, 0.55 > 0.1)
    assert s["auc"] == pytest.approx(7 / 16)
    assert s["auc_low"] <= s["auc"] <= s["auc_high"] and s["auc_low"] < s["auc_high"]
    assert s["ece"] > 0
    assert protocol.summarize(HAND, threshold=0.35, n_boot=50)["tpr"] == pytest.approx(0.75)


def test_result_rows_record_the_settings_used(tmp_path):
    path = tmp_path / "p.csv"
    HAND.to_csv(path, index=False)
    (row,) = protocol.result_rows(
        {"in_distribution": path}, settings={"threshold": 0.35, "n_boot": 50, "seed": 3}
    )
    assert (row["threshold"], row["n_boot"], row["seed"], row["n_bins"], row["stratified"]) == (
        0.35,
        50,
        3,
        10,
        True,
    )
    assert row["tpr"] == pytest.approx(0.75) and np.isnan(row["flip_rate"]) and row["pair_predictions"] == ""
    assert row["auc_low"] == protocol.summarize(HAND, n_boot=50, seed=3)["auc_low"]
    assert tuple(row) == protocol.RESULT_COLUMNS


def test_the_flip_rate_pairs_rows_by_id_and_names_unpaired_ids():
    flipped = HAND.assign(prob=[0.1, 0.6, 0.2, 0.2, 0.4, 0.3, 0.9, 0.1]).iloc[::-1]  # h2, h3, h7 change class
    assert protocol.flip_rate(HAND, flipped) == pytest.approx(3 / 8)
    assert protocol.flip_rate(HAND, flipped, threshold=0.15) == pytest.approx(1 / 8)  # h7 only
    with pytest.raises(ValueError) as error:
        protocol.flip_rate(HAND, HAND.assign(id=[f"x{i}" for i in range(8)]))
    assert str(error.value) == (
        "flip_rate needs the same unique ids in cf_with and cf_without; only in cf_with: "
        "['h0', 'h1', 'h2', 'h3', 'h4'], only in cf_without: ['x0', 'x1', 'x2', 'x3', 'x4']"
    )


def _run(test_set="bias_free", **changes):
    return {"scenario": "s", "method": "m", "test_set": test_set, "predictions": "p.csv", **changes}


@pytest.mark.parametrize(
    "runs, message",
    [
        ([], "runs: has no rows; give at least one (scenario, method, test_set, predictions)"),
        ([{"scenario": "s", "method": "m", "test_set": "t"}],
         "runs: missing column(s) ['predictions']; required ['scenario', 'method', 'test_set', 'predictions'], "
         "found ['scenario', 'method', 'test_set']"),
        ([_run(method=" ")], "runs: row 0 column 'method' must be a non-empty string, got ' '"),
        ([_run(), _run("ood", scenario=3)], "runs: row 1 column 'scenario' must be a non-empty string, got 3"),
        ([_run(method="a|b")], "runs: row 0 column 'method' = 'a|b' must not contain '|', '`' or line breaks"),
        ([_run(), _run()], "runs: each (scenario, method, test_set) must appear once; repeated: [['s', 'm', 'bias_free']]"),
        ([_run("cf_without")], "runs: scenario 's' method 'm' has test_set 'cf_without' but not 'cf_with'"),
        ([_run("cf_with")], "runs: scenario 's' method 'm' has test_set 'cf_with' but not 'cf_without'"),
    ],
)  # fmt: skip
def test_bad_runs_are_refused_naming_the_row_and_column(runs, message):
    with pytest.raises(ValueError) as error:
        protocol.check_runs(runs)
    assert str(error.value) == message


def test_checked_runs_keep_their_order_and_paths_as_text(tmp_path):
    table = protocol.check_runs(
        pd.DataFrame([_run("ood", predictions=tmp_path / "a.csv"), _run()], index=[5, 2])
    )
    assert list(table.index) == [0, 1] and table["test_set"].tolist() == ["ood", "bias_free"]
    assert table["predictions"].tolist() == [str(tmp_path / "a.csv"), "p.csv"]
    assert protocol.check_runs([_run(predictions="a|b.csv")])["predictions"].tolist() == ["a|b.csv"]


def test_counterfactual_delta_tpr_reads_the_pair_or_the_bias_free_set():
    assert protocol.counterfactual_delta_tpr(
        {"cf_with": {"tpr_bias1": 0.9}, "cf_without": {"tpr_bias0": 0.6}}
    ) == pytest.approx(0.3)
    assert protocol.counterfactual_delta_tpr(
        {"cf_with": {"tpr_bias1": 0.9}, "bias_free": {"tpr_bias0": 0.5}}
    ) == pytest.approx(0.4)
    assert protocol.counterfactual_delta_tpr({"bias_free": {"tpr_bias0": 0.5}}) is None


@pytest.mark.parametrize(
    "cf, free, verdict",
    [(0.10, 0.86, "removed"), (0.1001, 0.9, "kept"), (-0.10, 0.86, "removed"), (-0.1001, 0.9, "over-corrected"),
     (0.0, 0.8599, "finding lost"), (None, 0.9, "n/a"), (0.0, float("nan"), "n/a")],
)  # fmt: skip
def test_verdict_bounds_are_inclusive(cf, free, verdict):
    assert protocol.shortcut_verdict(cf, free, 0.88) == verdict
