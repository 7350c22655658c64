"""SimBA multi-bias data as published, through the experiment: results per bias type (0 both,
1 intensity, 2 shape, 3 none), and a test split that lacks a group still ends with exit code 0
and an acceptance summary that says why it is not scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from simba_layout import write_published

from data_prep.cli import main as data_prep_main
from pipeline.evaluation.verification import verify_report

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "prebiased3d"
# SimBA's multi-bias codes: 0 both, 1 intensity, 2 shape, 3 none; the bias goes with the class
POSITIVES = [(1, code) for code in (0, 1, 2, 0, 1, 2, 3, 3)]
NEGATIVES = [(0, code) for code in (0, 1, 2, 3, 3, 3, 3, 3)]
TINY = ["image_size=[16, 16, 16]", "max_epochs=1", "batch_size=8", "progress_bar=False", "tensorboard=False",
        "precise_bn_batches=1"]  # fmt: skip


def simba_datalist(root: Path, test_rows: list[tuple[int, int]]) -> Path:
    """SimBA's own layout (per-split folders, CSVs apart, the author's paths) -> a datalist, with
    the one documented command."""
    mixed = POSITIVES + NEGATIVES
    write_published(root / "SBB", "multi", {"train": mixed * 3, "val": mixed, "test": test_rows}, no_bias=3)
    code = data_prep_main(["simba", "--simba-root", str(root / "SBB"), "--experiment", "multi", "--out",
                           str(root / "datalist"), "--teacher-size", "4", "--no-progress"])  # fmt: skip
    assert code == 0
    return root / "datalist" / "datalist.json"


def run_experiment_command(datalist: Path, output: Path) -> subprocess.CompletedProcess:
    """``python -m pipeline.experiment`` as a user runs it, ERM and the reference only."""
    command = [sys.executable, "-m", "pipeline.experiment", "--scenarios", SCENARIO, "--methods", "erm", "reference",
               "--output", str(output), "--set", f"datalist={datalist}"]  # fmt: skip
    for setting in TINY:
        command += ["--set", setting]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_multi_bias_data_gets_results_per_bias_type(tmp_path):
    datalist = simba_datalist(tmp_path, (POSITIVES + NEGATIVES) * 2)
    done = run_experiment_command(datalist, tmp_path / "experiment")
    assert done.returncode == 0, done.stderr[-3000:]
    report = tmp_path / "experiment" / "report"
    table = pd.read_csv(report / "results_by_bias_type.csv")
    assert set(table["method"]) == {"erm", "reference"}
    for method, rows in table.groupby("method"):
        assert list(rows["bias_type"]) == ["none", "both", "intensity", "shape"], method
        assert dict(zip(rows["bias_type"], rows["n"])) == {"none": 14, "both": 6, "intensity": 6, "shape": 6}
        by_type = rows.set_index("bias_type")
        none, biased = by_type.loc["none"], by_type.loc[["both", "intensity", "shape"]]
        assert pd.isna(none["delta_tpr"])
        assert (biased["delta_tpr"] - (biased["tpr"] - none["tpr"])).abs().max() < 1e-9
    predictions = pd.read_csv(report.parent / SCENARIO / "erm" / "eval" / "predictions_in_distribution.csv")
    assert len(predictions) == table[table["method"] == "erm"]["n"].sum()
    assert "results_by_bias_type.md" in (report / "results.md").read_text()
    assert "| erm | shape | 6 |" in (report / "results_by_bias_type.md").read_text()
    assert verify_report(report) == []
    assert "erm_bias_inverted_auc" in json.loads((report / "acceptance.json").read_text())[SCENARIO]


@pytest.mark.slow
def test_a_test_split_without_a_group_is_reported_and_the_run_exits_0(tmp_path):
    # every positive test volume biased, every negative bias-free: no bias-free or bias-inverted test set
    test_rows = [(1, code) for code in (0, 1, 2) * 4] + [(0, 3)] * 12
    datalist = simba_datalist(tmp_path, test_rows)
    done = run_experiment_command(datalist, tmp_path / "experiment")
    assert done.returncode == 0, done.stderr[-3000:]
    report = tmp_path / "experiment" / "report"
    summary = json.loads((report / "acceptance.json").read_text())[SCENARIO]
    assert set(summary) == {"not_scored"}
    assert "no bias-inverted test set" in summary["not_scored"] and "(AUC needs both)" in summary["not_scored"]
    results = pd.read_csv(report / "results.csv")
    assert set(results["test_set"]) == {"in_distribution"}
    assert "Not possible: bias_free" in " ".join((report / "results.md").read_text().split())
    assert verify_report(report) == []
