"""The headline table (README) is read from results.csv: every cell from its test set's row."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.evaluation.headline import headline_markdown, headline_rows


def _results():
    rows = []
    for method, shift in (("erm", 0.0), ("distilled", 0.1)):
        for test_set, auc in (("bias_free", 0.8), ("bias_inverted", 0.3), ("in_distribution", 0.95),
                              ("cf_with", 0.7), ("cf_without", 0.8)):  # fmt: skip
            rows.append({"scenario": "s", "method": method, "test_set": test_set, "auc": auc + shift,
                         "delta_tpr": 0.6 - shift if test_set == "in_distribution" else None,
                         "tpr_bias1": 0.9 if test_set == "cf_with" else None,
                         "tpr_bias0": 0.4 + shift if test_set == "cf_without" else None,
                         "worst_group_accuracy": 0.2 + shift, "flip_rate": 0.5 if test_set == "cf_with" else None})  # fmt: skip
    return pd.DataFrame(rows)


def test_cells_come_from_their_test_sets():
    rows = headline_rows(_results(), "s")
    assert list(rows) == ["erm", "distilled"]
    distilled = rows["distilled"]
    assert distilled["bias-inverted AUC"] == pytest.approx(0.4)
    assert distilled["in-distribution AUC"] == pytest.approx(1.05)
    assert distilled["ΔTPR"] == pytest.approx(0.5)
    assert distilled["ΔTPR (counterfactual)"] == pytest.approx(0.9 - 0.5)
    assert distilled["worst-group acc. (inverted)"] == pytest.approx(0.3)
    assert distilled["flip rate"] == pytest.approx(0.5)
    assert math.isnan(distilled["OOD AUC"])  # no ood set in this run


def test_markdown_shows_needs_and_missing_sets():
    text = headline_markdown(_results(), {"distilled": "the teacher"})
    line = next(row for row in text.splitlines() if row.startswith("| distilled"))
    assert "| the teacher | 0.900 | 0.400 | 1.050 | n/a | 0.50 | 0.40 |" in line


def test_counterfactual_delta_tpr_is_the_protocol_s():
    from pipeline.evaluation.protocol import counterfactual_delta_tpr

    rows = headline_rows(_results(), "s")
    assert rows["erm"]["ΔTPR (counterfactual)"] == pytest.approx(
        counterfactual_delta_tpr({"cf_with": {"tpr_bias1": 0.9}, "cf_without": {"tpr_bias0": 0.4}})
    )


def test_gap_closed_and_verdict_are_scored_against_erm_and_the_reference():
    results = _results()
    reference = results[results["method"] == "erm"].assign(method="reference")
    reference.loc[reference["test_set"] == "bias_inverted", "auc"] = 0.7
    rows = headline_rows(pd.concat([results, reference]), "s")
    # bias-inverted 0.3 (ERM), 0.7 (reference), 0.4 (student): a quarter of the gap
    assert rows["distilled"]["gap closed"] == pytest.approx(0.25)
    assert rows["erm"]["gap closed"] == pytest.approx(0.0) and rows["reference"]["gap closed"] == pytest.approx(1.0)
    # the student's counterfactual ΔTPR is 0.9 - 0.5 = 0.4: it keeps the shortcut
    assert rows["distilled"]["verdict"] == "kept"
    text = headline_markdown(pd.concat([results, reference]))
    assert text.splitlines()[2].endswith("| flip rate | gap closed | verdict |")
    assert "| 25% | kept |" in next(r for r in text.splitlines() if r.startswith("| distilled"))


def test_gap_closed_is_n_a_without_a_reference():
    rows = headline_rows(_results(), "s")
    assert math.isnan(rows["distilled"]["gap closed"])
