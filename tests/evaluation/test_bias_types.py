"""Results per bias type (pipeline.evaluation.bias_types) from a prediction table and the items' types."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.evaluation.bias_types import item_types, results_by_bias_type


def predictions(rows):
    """rows: (id, label, bias, prob)."""
    return pd.DataFrame(rows, columns=["id", "label", "bias", "prob"])


def test_each_type_is_compared_with_the_bias_free_items():
    table = predictions([
        ("a", 1, 0, 0.4), ("b", 1, 0, 0.6), ("c", 0, 0, 0.2), ("d", 0, 0, 0.7),  # none: TPR 0.5, FPR 0.5
        ("e", 1, 1, 0.9), ("f", 1, 1, 0.8), ("g", 0, 1, 0.1),  # shape: TPR 1, FPR 0
        ("h", 1, 1, 0.3), ("i", 0, 1, 0.9),  # intensity: TPR 0, FPR 1
        ("x", 1, 0, 0.9),  # no type: left out
    ])  # fmt: skip
    types = {"a": "none", "b": "none", "c": "none", "d": "none", "e": "shape", "f": "shape", "g": "shape",
             "h": "intensity", "i": "intensity"}  # fmt: skip
    result = results_by_bias_type(table, types).set_index("bias_type")
    assert list(result.index) == ["none", "intensity", "shape"]
    assert result["n"].tolist() == [4, 2, 3] and result["n_positive"].tolist() == [2, 1, 2]
    assert result.loc["shape", "delta_tpr"] == pytest.approx(0.5) and result.loc["shape", "delta_fpr"] == pytest.approx(-0.5)
    assert result.loc["intensity", "delta_tpr"] == pytest.approx(-0.5) and result.loc["intensity", "delta_fpr"] == pytest.approx(0.5)
    assert result.loc["shape", "auc"] == pytest.approx(1.0) and result.loc["none", "auc"] == pytest.approx(0.5)
    assert math.isnan(result.loc["none", "delta_tpr"])


def test_a_type_with_one_class_has_no_auc_and_no_comparison_without_bias_free_items():
    table = predictions([("e", 1, 1, 0.9), ("f", 1, 1, 0.2), ("g", 0, 1, 0.3)])
    result = results_by_bias_type(table, {"e": "both", "f": "both", "g": "shape"}).set_index("bias_type")
    assert math.isnan(result.loc["shape", "auc"]) and result.loc["both", "tpr"] == pytest.approx(0.5)
    assert result["delta_tpr"].isna().all()


def test_types_come_from_items_that_have_one_and_no_match_is_an_error():
    items = [{"id": 1, "bias_type": "both"}, {"id": "b"}, {"id": "c", "bias_type": None}]
    assert item_types(items) == {"1": "both"}
    with pytest.raises(ValueError, match="none of the 1 predictions has an id with a bias_type"):
        results_by_bias_type(predictions([("z", 1, 0, 0.5)]), {"a": "none"})
