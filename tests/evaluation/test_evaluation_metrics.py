"""Metrics, prediction files and the protocol's summary against hand-computable cases, independent
reference formulas and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import metrics as m
from pipeline.evaluation import prediction_file as pf
from pipeline.evaluation import protocol


def _pairwise_auc(labels, probs):
    """Mann-Whitney AUC from all positive/negative pairs (ties count one half)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    pos, neg = probs[labels == 1][:, None], probs[labels == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _frame(labels, probs, bias=None, **extra):
    n = len(labels)
    data = {"id": [f"s{i}" for i in range(n)], "label": labels, "bias": bias if bias is not None else [0] * n}
    return pd.DataFrame({**data, "prob": probs, **extra})


# ----------------------------------------------------------------------------- AUC


def test_auc_perfect_reversed_and_tied():
    assert m.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert m.auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert m.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = np.round(rng.random(300) * 0.5 + 0.3 * labels, 1)  # rounding creates many ties
    assert m.auc(labels, probs) == pytest.approx(_pairwise_auc(labels, probs), abs=1e-12)


def test_auc_one_class_is_nan_with_warning():
    with pytest.warns(m.UndefinedMetricWarning, match="undefined"):
        assert np.isnan(m.auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="labels"):
        m.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probs"):
        m.auc([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="same length"):
        m.auc([0, 1, 1], [0.1, 0.2])


def _noisy(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    probs = np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.2, n), 0, 1)
    return labels, probs


def test_auc_ci_contains_estimate_narrows_with_n_and_is_seeded():
    small = m.auc_with_ci(*_noisy(40, 0), n_boot=300, seed=3)
    large = m.auc_with_ci(*_noisy(800, 0), n_boot=300, seed=3)
    for point, low, high in (small, large):
        assert low <= point <= high
    assert (large[2] - large[1]) < 0.6 * (small[2] - small[1])
    assert m.auc_with_ci(*_noisy(40, 0), n_boot=300, seed=3) == small
    assert m.auc_with_ci(*_noisy(40, 0), n_boot=300, seed=4) != small


def test_auc_ci_plain_bootstrap_skips_one_class_resamples():
    labels, probs = [1, 0, 0, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.95, 0.4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI would warn on a one-class resample
        point, low, high = m.auc_with_ci(labels, probs, n_boot=200, seed=0, stratified=False)
    assert point == pytest.approx(0.8)
    assert 0.0 <= low <= high <= 1.0


def test_resampled_aucs_equal_monai_auc_of_each_resample():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 150)
    probs = np.round(rng.random(150) * 0.6 + 0.3 * labels, 1)  # ties
    index = rng.integers(0, 150, size=(25, 150))
    index[0] = np.flatnonzero(labels == 1)[0]  # a resample with a single class
    values = m.resampled_aucs(labels, probs, index)
    assert np.isnan(values[0])
    expected = [m.auc(labels[row], probs[row]) for row in index[1:]]
    np.testing.assert_allclose(values[1:], expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="index"):
        m.resampled_aucs(labels, probs, np.array([[0, 150]]))


def test_auc_ci_rejects_bad_parameters():
    with pytest.raises(ValueError, match="n_boot"):
        m.auc_with_ci([0, 1], [0.1, 0.9], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        m.auc_with_ci([0, 1], [0.1, 0.9], level=95)


def test_roc_curve_area_equals_auc():
    labels, probs = _noisy(200, 5)
    probs = np.round(probs, 1)
    fpr, tpr = m.roc_curve(labels, probs)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(m.auc(labels, probs), abs=1e-12)


# ----------------------------------------------------------------------------- thresholded

# bias=1: 4 positives (3 predicted 1), 4 negatives (2 predicted 1)
# bias=0: 4 positives (1 predicted 1), 4 negatives (0 predicted 1)
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
PREDS = [1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
BIAS = [1] * 8 + [0] * 8


def test_rates_by_bias_group_by_construction():
    table = m.rates_by_group(LABELS, PREDS, BIAS)
    assert table.loc[1, "tpr"] == 0.75 and table.loc[0, "tpr"] == 0.25
    assert table.loc[1, "fpr"] == 0.5 and table.loc[0, "fpr"] == 0.0
    assert m.delta_tpr(LABELS, PREDS, BIAS) == pytest.approx(0.5)
    assert m.delta_fpr(LABELS, PREDS, BIAS) == pytest.approx(0.5)
    assert m.true_positive_rate(LABELS, PREDS) == 0.5
    assert m.false_positive_rate(LABELS, PREDS) == 0.25
    assert m.accuracy(LABELS, PREDS) == 10 / 16


def test_delta_tpr_swaps_sign_with_groups():
    flipped = [1 - b for b in BIAS]
    assert m.delta_tpr(LABELS, PREDS, flipped) == pytest.approx(-m.delta_tpr(LABELS, PREDS, BIAS))


def test_delta_tpr_nan_when_group_lacks_positives():
    labels = [1, 1, 0, 0, 0]
    bias = [0, 0, 1, 1, 0]
    with pytest.warns(m.UndefinedMetricWarning, match=r"with-artifact group \(bias=1\) has no positives"):
        assert np.isnan(m.delta_tpr(labels, [1, 0, 0, 1, 0], bias))
    with pytest.warns(m.UndefinedMetricWarning, match=r"without-artifact group \(bias=0\)"):
        assert np.isnan(m.delta_fpr([0, 1], [1, 1], [1, 0]))


def test_worst_group_accuracy_by_construction():
    accuracies = m.group_accuracies(LABELS, PREDS, BIAS)
    assert accuracies == {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.25, (1, 1): 0.75}
    assert m.worst_group_accuracy(LABELS, PREDS, BIAS) == 0.25
    # empty groups are skipped, not counted as 0
    assert m.worst_group_accuracy([1, 0], [1, 0], [1, 1]) == 1.0


def test_flip_rate_on_constructed_pairs_in_any_order():
    with_artifact = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [1, 0, 1, 0], "bias": 1,
                                  "prob": [0.9, 0.8, 0.8, 0.2]})
    without = pd.DataFrame({"id": ["d", "c", "b", "a"], "label": [0, 1, 0, 1], "bias": 0,
                            "prob": [0.1, 0.6, 0.3, 0.95]})
    assert protocol.flip_rate(with_artifact, without) == 0.25  # only "b" changes class
    assert protocol.flip_rate(with_artifact, without, threshold=0.75) == 0.5  # "a" stays 1, "b" and "c" flip
    assert protocol.flip_rate(with_artifact, with_artifact) == 0.0


def test_flip_rate_rejects_mismatched_ids():
    first = _frame([0, 1, 1], [0.1, 0.9, 0.8])
    second = first.assign(id=["s0", "s1", "other"])
    with pytest.raises(ValueError, match=r"only in cf_with: \['s2'\].*only in cf_without: \['other'\]"):
        protocol.flip_rate(first, second)


def test_ece_zero_for_calibrated_bins_and_known_when_not():
    labels = [0, 0, 0, 1] * 5 + [0, 1, 1, 1] * 5  # 25% positives at p=0.25, 75% at p=0.75
    probs = [0.25] * 20 + [0.75] * 20
    assert m.expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(0.0, abs=1e-6)
    assert m.expected_calibration_error([0] * 10, [0.9] * 10) == pytest.approx(0.9, abs=1e-6)


def test_ece_matches_equal_width_definition():
    rng = np.random.default_rng(2)
    probs = rng.random(500)
    labels = (rng.random(500) < probs**2).astype(int)
    bins = np.minimum((probs * 7).astype(int), 6)
    expected = sum(
        np.mean(bins == b) * abs(probs[bins == b].mean() - labels[bins == b].mean()) for b in np.unique(bins)
    )
    assert m.expected_calibration_error(labels, probs, n_bins=7) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="n_bins"):
        m.expected_calibration_error(labels, probs, n_bins=0)


# ----------------------------------------------------------------------------- files and summary


def test_load_predictions_types_and_keeps_ids_as_text(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,label,bias,prob,site\n007,1,0,0.8,A\nNA,0,1,0.3,B\n")
    df = pf.load_predictions(path)
    assert df["id"].tolist() == ["007", "NA"]
    assert df["label"].dtype == np.int64 and df["prob"].dtype == np.float64
    assert df["site"].tolist() == ["A", "B"]


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("id,label,prob\na,1,0.5\n", r"missing column\(s\) \['bias'\]"),
        ("id,label,bias,prob\na,2,0,0.5\n", r"column 'label' must be 0 or 1; found '2' \(data row 1\)"),
        ("id,label,bias,prob\na,1,0,0.5\nb,0,yes,0.5\n", r"column 'bias' must be 0 or 1; found 'yes' \(data row 2\)"),
        ("id,label,bias,prob\na,1,0,1.5\n", r"column 'prob' must be a number in \[0, 1\]; found '1.5'"),
        ("id,label,bias,prob\na,1,0,\n", r"column 'prob'"),
        ("id,label,bias,prob,pred\na,1,0,0.5,3\n", r"column 'pred'"),
        ("id,label,bias,prob\na,1,0,0.5\na,0,0,0.5\n", r"column 'id' must be unique"),
        ("id,label,bias,prob\n,1,0,0.5\n", r"column 'id' must be a non-empty identifier"),
        ("id,label,bias,prob\n", r"has no rows"),
    ],
)
def test_load_predictions_errors_name_file_and_column(tmp_path, content, pattern):
    path = tmp_path / "bad_preds.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern) as info:
        pf.load_predictions(path)
    assert "bad_preds.csv" in str(info.value)


def test_load_predictions_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        pf.load_predictions(tmp_path / "nowhere.csv")


def test_pred_column_overrides_threshold():
    df = pf.validate_predictions(_frame([1, 0], [0.9, 0.1], pred=[0, 1]))
    assert pf.predicted_labels(df).tolist() == [0, 1]
    assert pf.predicted_labels(df.drop(columns="pred"), threshold=0.95).tolist() == [0, 0]
    with pytest.raises(ValueError, match="threshold"):
        pf.predicted_labels(df, threshold=2)


def test_summarize_is_flat_consistent_deterministic_and_pure():
    rng = np.random.default_rng(0)
    n = 120
    labels, bias = rng.integers(0, 2, n), rng.integers(0, 2, n)
    df = _frame(labels, np.clip(0.2 + 0.4 * labels + 0.3 * bias * rng.random(n), 0, 1), bias=bias)
    before = df.copy()
    summary = protocol.summarize(df, n_boot=100, seed=1)
    pd.testing.assert_frame_equal(df, before)
    assert tuple(summary) == protocol.METRIC_COLUMNS
    preds = (df["prob"] >= 0.5).astype(int)
    assert summary["n"] == n and summary["n_bias"] == bias.sum()
    assert summary["auc"] == pytest.approx(_pairwise_auc(labels, df["prob"]))
    assert summary["delta_tpr"] == pytest.approx(summary["tpr_bias1"] - summary["tpr_bias0"])
    assert summary["worst_group_accuracy"] == m.worst_group_accuracy(labels, preds, bias)
    assert summary == protocol.summarize(df, n_boot=100, seed=1)


def test_summarize_on_bias_free_set_marks_gaps_undefined():
    df = _frame([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9])  # no artifact anywhere
    with pytest.warns(m.UndefinedMetricWarning):
        summary = protocol.summarize(df, n_boot=20)
    assert np.isnan(summary["delta_tpr"]) and np.isnan(summary["tpr_bias1"])
    assert summary["tpr_bias0"] == 1.0 and summary["worst_group_accuracy"] == 1.0
