"""The protocol's details that its mutants showed untested: defaults, settings passed on, keys and
columns by name, messages naming the counterfactual half, the shared file cache, error order."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import metrics, protocol
from pipeline.evaluation.metrics import UndefinedMetricWarning
from pipeline.evaluation.prediction_file import load_predictions
from tests.evaluation.test_protocol import HAND  # 8 predictions by hand: label x bias groups of two

# the same ids, h2, h3 and h7 change class at 0.5; only h7 at 0.15
FLIPPED = HAND.assign(prob=[0.1, 0.6, 0.2, 0.2, 0.4, 0.3, 0.9, 0.1])


def _noisy(n=200, seed=0):
    """n rows, half positives, probabilities rounded to 3 digits: fine enough that every setting of
    :func:`protocol.summarize` (n_boot, seed, n_bins, stratified) moves the AUC interval or the ECE."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], n // 2)
    probs = np.round(np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, n), 0, 1), 3)
    bias = np.tile([0, 0, 1, 1], n // 4)  # every label x bias group has members
    return pd.DataFrame({"id": [f"n{i}" for i in range(n)], "label": labels, "bias": bias, "prob": probs})


def _same(first: dict, second: dict) -> bool:
    return first == pytest.approx(second, rel=1e-12, nan_ok=True)


def _assert_entry(entry: dict, expected: dict) -> None:
    """Same keys; numbers within a relative 1e-9, anything else (None, a verdict) equal."""
    assert sorted(entry) == sorted(expected)
    for key, value in expected.items():
        assert entry[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key


# ----------------------------------------------------------------------------- summarize


def test_summarize_defaults_are_the_recorded_settings():
    df = _noisy()
    default = protocol.summarize(df)
    assert _same(default, protocol.summarize(df, **protocol.SETTINGS))
    # each default matters on this table: another value gives another interval or ECE
    for change in ({"n_boot": 1001}, {"seed": 1}, {"n_bins": 11}, {"stratified": False}):
        assert not _same(default, protocol.summarize(df, **{**protocol.SETTINGS, **change})), change


@pytest.mark.parametrize("stratified", [True, False])
def test_summarize_reports_the_bootstrap_interval_of_its_settings(stratified):
    df = _noisy()
    s = protocol.summarize(df, n_boot=200, seed=5, stratified=stratified)
    expected = metrics.auc_with_ci(df["label"], df["prob"], n_boot=200, seed=5, stratified=stratified)
    assert (s["auc"], s["auc_low"], s["auc_high"]) == pytest.approx(expected, rel=1e-12)
    other = metrics.auc_with_ci(df["label"], df["prob"], n_boot=200, seed=5, stratified=not stratified)
    assert (s["auc_low"], s["auc_high"]) != pytest.approx(other[1:], rel=1e-12)


def test_summarize_ece_uses_the_bins_given():
    # 2 bins: [0, 0.5) holds 0.1 (0), 0.4 (1), 0.3 (1): |0.2667 - 2/3| = 0.4;
    # [0.5, 1] holds 0.6, 0.7, 0.8 (0), 0.9, 0.55 (1): |0.71 - 0.4| = 0.31; (3 * 0.4 + 5 * 0.31) / 8
    assert protocol.summarize(HAND, n_boot=20, n_bins=2)["ece"] == pytest.approx(0.34375, rel=1e-6)
    assert protocol.summarize(HAND, n_boot=20)["ece"] != pytest.approx(0.34375, rel=1e-3)


def test_summarize_an_empty_label_bias_group_is_a_nan_accuracy():
    without_positive_bias0 = HAND[~((HAND["label"] == 1) & (HAND["bias"] == 0))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # ΔTPR has no bias-0 positives
        s = protocol.summarize(without_positive_bias0, n_boot=20)
    empty = s["acc_label1_bias0"]
    assert isinstance(empty, float) and math.isnan(empty)
    assert (s["acc_label0_bias0"], s["acc_label0_bias1"], s["acc_label1_bias1"]) == (0.5, 0.0, 1.0)
    assert s["worst_group_accuracy"] == 0.0


# ----------------------------------------------------------------------------- flip rate


@pytest.mark.parametrize(
    ("empty", "message"),
    [("with", "cf_with predictions: has no rows"), ("without", "cf_without predictions: has no rows")],
)
def test_flip_rate_errors_name_the_half_of_the_pair(empty, message):
    tables = {"with": HAND, "without": FLIPPED, empty: HAND.iloc[:0]}
    with pytest.raises(ValueError) as error:
        protocol.flip_rate(tables["with"], tables["without"])
    assert str(error.value) == message


# ----------------------------------------------------------------------------- result rows


def _pair_files(folder):
    HAND.to_csv(folder / "with.csv", index=False)
    FLIPPED.to_csv(folder / "without.csv", index=False)
    return {"cf_with": folder / "with.csv", "cf_without": folder / "without.csv"}


def test_result_rows_of_the_pair_alone_cross_reference_and_use_the_threshold(tmp_path):
    files = _pair_files(tmp_path)
    cache = {}
    with_row, without_row = protocol.result_rows(
        files, settings={"threshold": 0.15, "n_boot": 20}, cache=cache
    )
    assert (with_row["flip_rate"], without_row["flip_rate"]) == (pytest.approx(1 / 8), pytest.approx(1 / 8))
    assert with_row["pair_predictions"] == str(files["cf_without"])
    assert without_row["pair_predictions"] == str(files["cf_with"])
    # the tables are kept in the cache given, by path
    assert set(cache) == {files["cf_with"], files["cf_without"]}
    pd.testing.assert_frame_equal(cache[files["cf_without"]], load_predictions(files["cf_without"]))
    (alone,) = protocol.result_rows({"cf_with": files["cf_with"]}, settings={"n_boot": 20})
    assert math.isnan(alone["flip_rate"]) and alone["pair_predictions"] == ""


def test_result_rows_read_relative_paths_from_the_working_folder_without_a_base(tmp_path, monkeypatch):
    HAND.to_csv(tmp_path / "p.csv", index=False)
    monkeypatch.chdir(tmp_path)
    (row,) = protocol.result_rows({"in_distribution": "p.csv"}, settings={"n_boot": 20})
    assert row["predictions"] == "p.csv" and row["accuracy"] == pytest.approx(3 / 8)


@pytest.mark.parametrize("stratified", [True, False])
def test_result_rows_pass_every_setting_to_summarize(tmp_path, stratified):
    df = _noisy()
    df.to_csv(tmp_path / "p.csv", index=False)
    settings = {"threshold": 0.6, "n_boot": 200, "seed": 5, "n_bins": 4, "stratified": stratified}
    (row,) = protocol.result_rows({"in_distribution": tmp_path / "p.csv"}, settings=settings)
    expected = protocol.summarize(df, **settings)
    assert _same({k: row[k] for k in protocol.METRIC_COLUMNS}, expected)
    assert not _same(expected, protocol.summarize(df, threshold=0.6))  # the settings do matter here


def test_result_rows_silence_only_the_expected_warning_of_one_group_sets(tmp_path):
    HAND.assign(bias=0).to_csv(tmp_path / "one_group.csv", index=False)
    path = tmp_path / "one_group.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (row,) = protocol.result_rows({"bias_free": path}, settings={"n_boot": 20})
    assert math.isnan(row["delta_tpr"]) and math.isnan(row["delta_fpr"])
    with pytest.warns(UndefinedMetricWarning) as record:
        protocol.result_rows({"in_distribution": path}, settings={"n_boot": 20})
    assert [str(w.message) for w in record] == [
        "delta_tpr is undefined: the with-artifact group (bias=1) has no positives (label=1); returning NaN",
        "delta_fpr is undefined: the with-artifact group (bias=1) has no negatives (label=0); returning NaN",
    ]


def test_result_rows_let_other_warnings_of_one_group_sets_through(tmp_path, monkeypatch):
    HAND.assign(bias=0).to_csv(tmp_path / "one_group.csv", index=False)
    real = protocol.expected_calibration_error

    def warning_ece(*args, **kwargs):
        warnings.warn("a warning that is not about an empty group", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "expected_calibration_error", warning_ece)
    with pytest.warns(UserWarning, match="not about an empty group"):
        protocol.result_rows({"bias_free": tmp_path / "one_group.csv"}, settings={"n_boot": 20})


# ----------------------------------------------------------------------------- runs and tables


def _run(test_set="bias_free", **changes):
    return {"scenario": "s", "method": "m", "test_set": test_set, "predictions": "p.csv", **changes}


def test_checked_runs_have_exactly_the_run_columns():
    table = protocol.check_runs(pd.DataFrame([_run("ood"), _run()], index=[5, 2]))
    assert list(table.columns) == list(protocol.RUN_COLUMNS) and list(table.index) == [0, 1]


@pytest.mark.parametrize(
    ("runs", "repeated"),
    [
        ([_run(), _run(predictions="q.csv")], "[['s', 'm', 'bias_free']]"),  # other files, the same key
        ([_run("ood"), _run(), _run(), _run("ood")], "[['s', 'm', 'ood'], ['s', 'm', 'bias_free']]"),
    ],
)
def test_repeated_runs_are_named_by_key_in_the_runs_order(runs, repeated):
    with pytest.raises(ValueError) as error:
        protocol.check_runs(runs)
    assert (
        str(error.value) == f"runs: each (scenario, method, test_set) must appear once; repeated: {repeated}"
    )


def test_a_lone_counterfactual_half_is_reported_for_the_first_model_in_the_runs_order():
    runs = [_run("cf_with", scenario="z"), _run("cf_without", scenario="a")]
    with pytest.raises(ValueError) as error:
        protocol.check_runs(runs)
    assert str(error.value) == "runs: scenario 'z' method 'm' has test_set 'cf_with' but not 'cf_without'"


def test_results_table_names_scenario_and_method_and_applies_the_settings(tmp_path):
    HAND.to_csv(tmp_path / "p.csv", index=False)
    runs = [
        _run("in_distribution", scenario="z", method="erm"),
        _run("in_distribution", scenario="a", method="kd"),
    ]
    table = protocol.results_table(runs, tmp_path, threshold=0.35, n_boot=20)
    assert table[["scenario", "method", "test_set"]].values.tolist() == [
        ["z", "erm", "in_distribution"],
        ["a", "kd", "in_distribution"],
    ]
    assert table["threshold"].tolist() == [0.35, 0.35] and table["n_boot"].tolist() == [20, 20]
    assert table["tpr"].tolist() == pytest.approx([0.75, 0.75])  # 3 of 4 positives at prob >= 0.35


def test_results_table_reads_a_file_shared_by_runs_once(tmp_path, monkeypatch):
    HAND.to_csv(tmp_path / "p.csv", index=False)
    read = []

    def counting_load(path):
        read.append(path)
        return load_predictions(path)

    monkeypatch.setattr(protocol, "load_predictions", counting_load)
    runs = [_run("in_distribution", method="erm"), _run("in_distribution", method="kd")]
    table = protocol.results_table(runs, tmp_path, n_boot=20)
    assert read == [tmp_path / "p.csv"] and table["accuracy"].tolist() == pytest.approx([3 / 8, 3 / 8])


def test_results_table_reports_the_first_missing_file_in_the_runs_order(tmp_path):
    runs = [_run(scenario="z", predictions="z.csv"), _run(scenario="a", predictions="a.csv")]
    with pytest.raises(FileNotFoundError) as error:
        protocol.results_table(runs, tmp_path)
    assert str(error.value) == f"prediction file {str(tmp_path / 'z.csv')!r} does not exist"


def test_results_frame_orders_the_columns_and_reads_null_numbers_as_nan():
    row = {
        "note": "dropped",
        "auc": 0.75,
        "flip_rate": None,
        "test_set": "ood",
        "method": "m",
        "scenario": "s",
    }
    table = protocol.results_frame([row])
    assert list(table.columns) == ["scenario", "method", *protocol.RESULT_COLUMNS]
    assert table["auc"].tolist() == [0.75] and table["flip_rate"].dtype == np.float64
    assert math.isnan(table["flip_rate"].iloc[0]) and table["test_set"].tolist() == ["ood"]
    assert list(protocol.results_frame([{"test_set": "ood"}]).columns) == list(protocol.RESULT_COLUMNS)
    again = protocol.results_frame(table)
    pd.testing.assert_frame_equal(again, table)


# ----------------------------------------------------------------------------- eval folder and claims


def test_named_test_sets_default_to_the_test_role():
    assert protocol.named_test_sets() == protocol.TEST_SETS


def test_results_without_cf_with_have_no_pair(tmp_path):
    HAND.to_csv(tmp_path / "in.csv", index=False)
    HAND.assign(bias=0).to_csv(tmp_path / "free.csv", index=False)
    evaluated = {"in_distribution": tmp_path / "in.csv", "bias_free": tmp_path / "free.csv"}
    rows = protocol.write_results(tmp_path, evaluated)
    assert [row["test_set"] for row in rows] == ["in_distribution", "bias_free"]
    read = protocol.read_results(tmp_path)
    assert [(row["predictions"], row["pair_predictions"]) for row in read] == [
        (str(tmp_path.absolute() / "in.csv"), ""),
        (str(tmp_path.absolute() / "free.csv"), ""),
    ]


def test_counterfactual_delta_tpr_without_either_reference_is_none():
    assert protocol.counterfactual_delta_tpr({"cf_with": {"tpr_bias1": 0.9}}) is None
    assert protocol.counterfactual_delta_tpr({}) is None


ERM = {"bias_inverted": {"auc": 0.2}, "bias_free": {"auc": 0.88, "tpr_bias0": 0.4},
       "in_distribution": {"delta_tpr": 0.8}, "cf_with": {"tpr_bias1": 0.9, "flip_rate": 0.7}}  # fmt: skip
TEACHER = {"bias_inverted": {"auc": 0.83}, "bias_free": {"auc": 0.87, "tpr_bias0": 0.6},
           "in_distribution": {"delta_tpr": 0.05}, "cf_with": {"tpr_bias1": 0.65, "flip_rate": 0.15}}  # fmt: skip


def test_acceptance_entry_in_full():
    sparse_student = {"bias_free": {"auc": 0.86}}  # no bias-inverted, in-distribution or counterfactual set
    entry = protocol.acceptance(
        {
            "erm": ERM,
            "reference": {"bias_inverted": {"auc": 0.9}},
            "teacher": TEACHER,
            "distilled": sparse_student,
        }
    )
    expected = {
        "erm_bias_inverted_auc": 0.2, "reference_bias_inverted_auc": 0.9, "erm_gap": 0.7,
        "erm_delta_tpr": 0.8, "erm_delta_tpr_counterfactual": 0.5, "erm_bias_free_auc": 0.88,
        "teacher_bias_inverted_auc": 0.83, "teacher_bias_free_auc": 0.87, "teacher_gap_closed": 0.9,
        "teacher_delta_tpr": 0.05, "teacher_delta_tpr_counterfactual": 0.05, "teacher_flip_rate": 0.15,
        "teacher_verdict": "removed",
        "distilled_bias_inverted_auc": None, "distilled_bias_free_auc": 0.86, "distilled_gap_closed": None,
        "distilled_delta_tpr": None, "distilled_delta_tpr_counterfactual": None, "distilled_flip_rate": None,
        "distilled_verdict": "n/a", "gap_closed": None,
    }  # fmt: skip
    _assert_entry(entry, expected)


def test_acceptance_of_erm_and_the_reference_alone():
    entry = protocol.acceptance(
        {"erm": {"bias_inverted": {"auc": 0.2}}, "reference": {"bias_inverted": {"auc": 0.9}}}
    )
    _assert_entry(entry, {
        "erm_bias_inverted_auc": 0.2, "reference_bias_inverted_auc": 0.9, "erm_gap": 0.7,
        "erm_delta_tpr": None, "erm_delta_tpr_counterfactual": None, "erm_bias_free_auc": None,
    })  # fmt: skip


@pytest.mark.parametrize("lacking", ["erm", "reference"])
def test_acceptance_is_none_when_either_lacks_a_bias_inverted_set(lacking):
    metrics_ = {"erm": ERM, "reference": {"bias_inverted": {"auc": 0.9}}}
    metrics_[lacking] = {"bias_free": {"auc": 0.88}}
    assert protocol.acceptance(metrics_) is None
