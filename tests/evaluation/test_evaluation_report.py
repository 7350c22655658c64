"""The report's files exist, its numbers trace back to the prediction files, and tampering is found."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import metrics
from pipeline.evaluation.report import build_report, load_results
from pipeline.evaluation.verification import recompute_results, verify_report

N = 40
TEST_SETS = ("in_distribution", "bias_free", "bias_inverted", "cf_with", "cf_without")


def _bias_for(test_set, labels, rng):
    if test_set == "in_distribution":  # artifact on 90% of positives and 10% of negatives
        return np.where(rng.random(len(labels)) < 0.9, labels, 1 - labels)
    return {
        "bias_free": np.zeros_like(labels),
        "bias_inverted": 1 - labels,
        "cf_with": np.ones_like(labels),
        "cf_without": np.zeros_like(labels),
    }[test_set]


def _write_predictions(root, scenario="patch"):
    """ERM reads only the artifact; the reference reads only the label (perfectly)."""
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], N // 2)
    runs = []
    for test_set in TEST_SETS:
        bias = _bias_for(test_set, labels, rng)
        ids = [f"case{i:03d}" for i in range(N)]
        noise = rng.random(N) * 0.1
        for method, prob in (("erm", 0.05 + 0.85 * bias + noise), ("reference", 0.05 + 0.85 * labels + noise)):
            path = root / "predictions" / scenario / method / f"{test_set}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"id": ids, "label": labels, "bias": bias, "prob": prob}).to_csv(path, index=False)
            runs.append({"scenario": scenario, "method": method, "test_set": test_set, "predictions": str(path)})
    return runs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report for the module (figures are the slow part); tests get their own copy."""
    root = tmp_path_factory.mktemp("built")
    runs = _write_predictions(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        written = build_report(runs, root / "report", n_boot=50, seed=0)
    return root, runs, written


@pytest.fixture
def report(built, tmp_path):
    """A private copy of the built report and its prediction files (paths rewritten to the copy)."""
    root, runs, written = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    runs = [{**r, "predictions": r["predictions"].replace(str(root), str(copy))} for r in runs]
    written = {name: copy / "report" / name for name in written}
    return copy / "report", runs, written


def _row(results, method, test_set):
    return results[(results["method"] == method) & (results["test_set"] == test_set)].iloc[0]


def test_files_exist_and_are_complete(report):
    out_dir, runs, written = report
    assert {"results.csv", "results.md"} <= set(written)
    pngs = [p for name, p in written.items() if name.endswith(".png")]
    assert len(pngs) == len(TEST_SETS) + 1  # one ROC per test set, one TPR-by-bias chart
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]
    results = load_results(out_dir)
    assert len(results) == len(runs)
    assert set(zip(results["method"], results["test_set"])) == {(r["method"], r["test_set"]) for r in runs}
    text = (out_dir / "results.md").read_text()
    for name in written:
        if name.endswith(".png"):
            assert f"]({name})" in text


def test_known_values_reach_csv_and_markdown(report):
    out_dir, _, _ = report
    results = load_results(out_dir)
    reference, erm = _row(results, "reference", "bias_inverted"), _row(results, "erm", "bias_inverted")
    assert (reference["auc"], reference["auc_low"], reference["auc_high"]) == (1.0, 1.0, 1.0)
    assert erm["auc"] == 0.0 and erm["worst_group_accuracy"] == 0.0
    assert np.isnan(erm["delta_tpr"])  # every positive is without artifact in the inverted set
    assert _row(results, "erm", "cf_with")["flip_rate"] == 1.0
    assert _row(results, "erm", "cf_without")["flip_rate"] == 1.0
    assert _row(results, "reference", "cf_with")["flip_rate"] == 0.0
    assert np.isnan(_row(results, "reference", "bias_free")["flip_rate"])
    text = (out_dir / "results.md").read_text()
    assert "| reference | bias_inverted | 40 | 1.000 [1.000, 1.000] |" in text
    # accuracy 0, TPR without artifact 0; TPR with artifact, ΔTPR, ΔFPR undefined; worst group 0
    assert "| erm | bias_inverted | 40 | 0.000 [0.000, 0.000] | 0.000 | 0.000 | n/a | n/a | n/a | 0.000 |" in text


def test_fresh_report_verifies_and_recomputes_identically(report):
    out_dir, _, _ = report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        assert verify_report(out_dir) == []
        recomputed = recompute_results(out_dir)
    pd.testing.assert_frame_equal(recomputed.reset_index(drop=True), load_results(out_dir), check_dtype=False)


def _verify(out_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        return verify_report(out_dir)


def test_tampered_markdown_number_is_detected(report):
    out_dir, _, _ = report
    md = out_dir / "results.md"
    text = md.read_text()
    row = "| reference | bias_inverted | 40 | 1.000 [1.000, 1.000] |"
    md.write_text(text.replace(row, row.replace("1.000 [1.000", "0.990 [1.000")))
    problems = _verify(out_dir)
    assert len(problems) == 1 and "('patch', 'reference', 'bias_inverted')" in problems[0] and "0.990" in problems[0]


def test_tampered_headline_and_missing_row_are_detected(report):
    out_dir, _, _ = report
    md = out_dir / "results.md"
    lines = md.read_text().splitlines()
    headline = lines.index(next(line for line in lines if line.startswith("| erm |")))  # AUC-by-test-set table
    cells = lines[headline].strip("|").split("|")
    cells[2] = " 0.700 [0.600, 0.800] "  # the bias_free column
    lines[headline] = "|" + "|".join(cells) + "|"
    lines = [line for line in lines if not line.startswith("| reference | bias_free |")]
    md.write_text("\n".join(lines) + "\n")
    problems = _verify(out_dir)
    assert any("('patch', 'erm', 'bias_free') AUC" in p and "0.700" in p for p in problems)
    assert any("no 'All metrics' row for ('patch', 'reference', 'bias_free')" in p for p in problems)
    assert len(problems) == 2


def test_tampered_csv_and_changed_predictions_are_detected(report):
    out_dir, runs, _ = report
    results = pd.read_csv(out_dir / "results.csv", keep_default_na=False)
    results.loc[0, "accuracy"] = 0.123
    results.to_csv(out_dir / "results.csv", index=False)
    problems = _verify(out_dir)
    assert len(problems) == 1 and "column 'accuracy'" in problems[0] and "0.123" in problems[0]

    changed = next(r["predictions"] for r in runs if r["method"] == "reference" and r["test_set"] == "bias_inverted")
    frame = pd.read_csv(changed, dtype={"id": str})
    frame["prob"] = 1 - frame["prob"]
    frame.to_csv(changed, index=False)
    assert any("reference/bias_inverted" in p and "'auc'" in p for p in _verify(out_dir))


def test_report_folder_can_move_with_its_predictions(report):
    out_dir, _, _ = report  # a copy of the built folder, prediction files included
    assert _verify(out_dir) == []
    assert not load_results(out_dir)["predictions"].str.startswith("/").any()


def test_build_is_deterministic_and_links_extra_figures(tmp_path):
    runs = _write_predictions(tmp_path)[:4]
    figure = tmp_path / "layers.png"
    figure.write_bytes(b"\x89PNG")
    table = pd.DataFrame(runs)
    before = table.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        build_report(table, tmp_path / "a", n_boot=30, seed=5, extra_figures={"layer curves": figure})
        build_report(runs, tmp_path / "b", n_boot=30, seed=5)
    pd.testing.assert_frame_equal(table, before)  # the caller's table is not modified
    a, b = (tmp_path / "a" / "results.csv").read_text(), (tmp_path / "b" / "results.csv").read_text()
    assert a == b
    assert "![layer curves](../layers.png)" in (tmp_path / "a" / "results.md").read_text()


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda runs: [{k: v for k, v in r.items() if k != "method"} for r in runs], r"missing column\(s\) \['method'\]"),
        (lambda runs: runs + runs[:1], r"must appear once.*'patch', 'erm', 'in_distribution'"),
        (lambda runs: [r for r in runs if r["test_set"] != "cf_without"], "has test_set 'cf_with' but not 'cf_without'"),
        (lambda runs: [{**runs[0], "method": "a|b"}], "must not contain"),
        (lambda runs: [{**runs[0], "scenario": ""}], "column 'scenario' must be a non-empty string"),
        (lambda runs: [], "has no rows"),
    ],
)
def test_bad_runs_are_rejected(tmp_path, change, pattern):
    runs = _write_predictions(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        build_report(change(runs), tmp_path / "report", n_boot=10)
    assert not (tmp_path / "report" / "results.csv").exists()


def test_bad_prediction_file_and_extra_figure_are_named(tmp_path):
    runs = _write_predictions(tmp_path)[:2]
    with pytest.raises(ValueError, match=r"extra_figures\['saliency'\].*missing.png"):
        build_report(runs, tmp_path / "report", n_boot=10, extra_figures={"saliency": tmp_path / "missing.png"})
    pd.read_csv(runs[0]["predictions"]).assign(label=3).to_csv(runs[0]["predictions"], index=False)
    with pytest.raises(ValueError, match=r"in_distribution.csv.*column 'label'"):
        build_report(runs, tmp_path / "report", n_boot=10)


def test_tampered_headline_table_is_named(report):
    from pipeline.evaluation.headline import write_headline

    out_dir, _, _ = report
    path = write_headline(load_results(out_dir), out_dir, {"erm": "-"})
    assert _verify(out_dir) == []
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| reference |"))
    cells = lines[row].split("|")
    assert cells[4].strip() == "1.000"  # bias-inverted AUC
    cells[4] = " 0.950 "
    lines[row] = "|".join(cells)
    path.write_text("\n".join(line for line in lines if not line.startswith("| erm |")) + "\n")
    problems = _verify(out_dir)
    assert len(problems) == 2
    assert "headline.md" in problems[0] and "(patch/reference) 'bias-inverted AUC'" in problems[0]
    assert "'0.950'" in problems[0] and "'1.000'" in problems[0]
    assert problems[1] == "headline.md: no row for (patch, erm)"
