"""The report's figures: ordering, file names, ROC curves and TPR bars drawn from the given rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.evaluation import figures
from pipeline.evaluation.figures import FIGURE_DIR, check_slugs, ordered, write_figures


def test_ordered_puts_known_values_first_then_the_rest_as_first_seen():
    assert ordered(["b", "x", "a", "b", "y", "x"], known=["a", "b", "c"]) == ["a", "b", "x", "y"]
    assert ordered(["z", "y", "z"]) == ["z", "y"]


def test_names_giving_the_same_file_name_are_refused():
    check_slugs(["erm", "jtt run", "a/b"], "method")  # distinct slugs: fine
    with pytest.raises(ValueError, match="'a b' and 'a/b' give the same figure file name 'a-b'"):
        check_slugs(["a b", "a/b"], "method")


def _frames():
    return {
        "erm.csv": pd.DataFrame({"label": [0, 0, 1, 1], "prob": [0.1, 0.6, 0.4, 0.9]}),
        "ref.csv": pd.DataFrame({"label": [0, 0, 1, 1], "prob": [0.1, 0.2, 0.8, 0.9]}),
        "one_class.csv": pd.DataFrame({"label": [1, 1], "prob": [0.3, 0.7]}),
    }


def _results():
    rows = []
    for test_set, tprs in (("bias_inverted", (0.5, float("nan"))), ("bias_free", (0.9, 0.8))):
        rows.append({"scenario": "loc 2d", "method": "erm", "test_set": test_set, "auc": 0.75,
                     "predictions": "erm.csv", "tpr_bias0": tprs[0], "tpr_bias1": tprs[1]})  # fmt: skip
        rows.append({"scenario": "loc 2d", "method": "reference", "test_set": test_set, "auc": 1.0,
                     "predictions": "ref.csv", "tpr_bias0": 1.0, "tpr_bias1": 0.25})  # fmt: skip
    rows.append({"scenario": "loc 2d", "method": "teacher", "test_set": "bias_free", "auc": float("nan"),
                 "predictions": "one_class.csv", "tpr_bias0": 0.0, "tpr_bias1": 0.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_roc_figure_draws_one_curve_per_method_with_two_classes():
    results = _results()
    part = results[results["test_set"] == "bias_free"]
    axis = figures._roc_figure(part, _frames(), "ROC").axes[0]
    assert axis.get_title() == "ROC"
    labels = axis.get_legend_handles_labels()[1]
    assert labels == ["erm (AUC 0.750)", "reference (AUC 1.000)"]  # the one-class teacher has no curve
    curves = {line.get_label(): line for line in axis.get_lines()}
    fpr, tpr = curves["reference (AUC 1.000)"].get_data()
    assert list(fpr)[:2] == [0.0, 0.0] and max(tpr) == 1.0 and list(fpr)[-1] == 1.0


def test_tpr_figure_has_a_panel_per_test_set_with_both_groups_and_na_for_undefined():
    results = _results()
    fig = figures._tpr_figure(results, ["bias_inverted", "bias_free"], "TPR")
    inverted, free = fig.axes
    assert (inverted.get_title(), free.get_title()) == ("bias_inverted", "bias_free")
    heights = [bar.get_height() for bar in free.patches]
    # methods in first-seen order: erm, reference, teacher; bias=0 bars, then bias=1 bars
    assert heights == pytest.approx([0.9, 1.0, 0.0, 0.8, 0.25, 0.0])
    inverted_heights = [bar.get_height() for bar in inverted.patches]
    assert inverted_heights[:2] == pytest.approx([0.5, 1.0]) and math.isnan(inverted_heights[2])
    assert math.isnan(inverted_heights[3])  # erm's undefined bias=1 TPR
    texts = [t.get_text() for t in inverted.texts]
    assert texts.count(figures.NOT_AVAILABLE) == 3  # erm bias=1, and the absent teacher's two bars
    assert [t.get_text() for t in free.texts] == []


def test_write_figures_writes_each_test_sets_roc_and_the_tpr_panel_as_pngs(tmp_path):
    links = write_figures(_results(), _frames(), tmp_path)
    # test sets in the report's order (protocol.REPORT_TEST_SETS), then the TPR panel
    expected = [
        ("ROC, loc 2d, bias_free", f"{FIGURE_DIR}/roc__loc-2d__bias_free.png"),
        ("ROC, loc 2d, bias_inverted", f"{FIGURE_DIR}/roc__loc-2d__bias_inverted.png"),
        ("TPR per bias group, loc 2d", f"{FIGURE_DIR}/tpr_by_bias__loc-2d.png"),
    ]
    assert sorted(links) == ["loc 2d"]
    assert links["loc 2d"] == expected
    sizes = {}
    for _, link in links["loc 2d"]:
        with Image.open(tmp_path / link) as image:
            assert image.format == "PNG"
            sizes[link] = image.size
    assert sizes[expected[0][1]] == (540, 504)  # 4.5 x 4.2 inches at 120 dpi
    assert sizes[expected[2][1]] == (768, 408)  # two panels of 3.2 inches, 3.4 high
    assert sorted(p.name for p in (tmp_path / FIGURE_DIR).iterdir()) == sorted(
        link.split("/")[1] for _, link in expected
    )


def test_save_figure_replaces_an_existing_file_whole(tmp_path):
    from matplotlib.figure import Figure

    out = tmp_path / "f.png"
    out.write_bytes(b"old")
    fig = Figure(figsize=(1, 2))
    fig.subplots().plot(np.arange(3))
    assert figures.save_figure(fig, out, dpi=50) == out
    with Image.open(out) as image:
        assert image.size == (50, 100)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary file left
