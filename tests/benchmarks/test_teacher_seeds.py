"""The teacher-seed study's table: its rows are scored honestly and its runs file is checked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks import teacher_seeds


def _model(inverted: float, free: float, tpr_with: float, tpr_without: float, flip: float) -> dict:
    return {"bias_inverted": {"auc": inverted}, "bias_free": {"auc": free, "tpr_bias0": tpr_without},
            "in_distribution": {"delta_tpr": 0.0}, "cf_with": {"tpr_bias1": tpr_with, "flip_rate": flip}}  # fmt: skip


METRICS = {
    "erm": _model(0.2, 0.88, 0.95, 0.2, 0.8),
    "reference": _model(0.9, 0.97, 0.6, 0.55, 0.05),
    "teacher": _model(0.95, 0.84, 0.4, 0.7, 0.3),  # lowers its output on the artifact: ΔTPR -0.3
    "distilled": _model(0.83, 0.87, 0.62, 0.6, 0.04),
}


def test_row_has_the_issue_s_columns_and_scores_both_models():
    config = teacher_seeds.base_config({"scenario": "localized2d"}, Path("out"))
    row = teacher_seeds.table_row("r", config, 3, METRICS, 12.4)
    assert list(row) == teacher_seeds.COLUMNS
    assert row["teacher_seed"] == 3 and row["network"] == "small_cnn" and row["seconds"] == 12
    assert row["gap_closed"] == pytest.approx(0.9)
    assert row["teacher_cf_delta_tpr"] == pytest.approx(-0.3) and row["teacher_verdict"] == "over-corrected"
    assert row["distilled_cf_delta_tpr"] == pytest.approx(0.02) and row["verdict"] == "removed"
    assert row["distilled_bias_free_auc"] == pytest.approx(0.87) and row["erm_bias_free_auc"] == pytest.approx(0.88)


def test_spread_is_max_minus_min_per_run_and_counts_removed():
    table = pd.DataFrame({"run": ["a", "a", "a", "b"], "gap_closed": [0.8, 0.95, 0.7, 0.5],
                          "verdict": ["removed", "over-corrected", "removed", "kept"]})  # fmt: skip
    summary = teacher_seeds.spread(table)
    assert summary.loc["a", "gap_closed_spread"] == pytest.approx(0.25)
    assert summary.loc["a", "removed"] == 2 and summary.loc["b", "removed"] == 0
    assert summary.loc["a", "teachers"] == 3


def test_table_is_written_in_column_order(tmp_path):
    config = teacher_seeds.base_config({"scenario": "localized2d", "settings": {"network_name": "resnet18"}}, tmp_path)
    row = teacher_seeds.table_row("r", config, 0, METRICS, 1.0)
    teacher_seeds.write_table([row], tmp_path / "t.csv")
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns) == teacher_seeds.COLUMNS and table.loc[0, "network"] == "resnet18"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("r: {teacher_seeds: [0]}", "needs 'scenario' and 'teacher_seeds'"),
        ("r: {scenario: localized2d, teacher_seeds: [0], seting: {}}", r"unknown key\(s\) \['seting'\]"),
    ],
)
def test_runs_file_errors_name_the_run(tmp_path, content, message):
    path = tmp_path / "runs.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        teacher_seeds.load_runs(path)


def test_committed_runs_file_loads_and_covers_the_issue_s_seeds():
    runs = teacher_seeds.load_runs(Path(teacher_seeds.__file__).parent / "configs" / "teacher_seeds.yaml")
    seeds = {run["scenario"]: len(run["teacher_seeds"]) for run in runs.values()}
    assert seeds["localized2d"] >= 5 and seeds["diffuse2d"] >= 3


def test_table_keeps_the_rows_of_other_runs_and_replaces_its_own(tmp_path):
    config = teacher_seeds.base_config({"scenario": "localized2d"}, tmp_path)
    path = tmp_path / "t.csv"
    teacher_seeds.write_table([teacher_seeds.table_row("a", config, 0, METRICS, 1.0)], path)
    teacher_seeds.write_table([teacher_seeds.table_row("b", config, 0, METRICS, 2.0)], path)
    teacher_seeds.write_table([teacher_seeds.table_row("a", config, 0, METRICS, 3.0)], path)
    table = pd.read_csv(path)
    assert sorted(zip(table["run"], table["seconds"])) == [("a", 3), ("b", 2)]


def test_teachers_from_must_name_a_run_of_the_same_scenario(tmp_path):
    path = tmp_path / "runs.yaml"
    path.write_text("a: {scenario: localized2d, teacher_seeds: [0]}\n"
                    "b: {scenario: diffuse2d, teacher_seeds: [0], teachers_from: a}\n")  # fmt: skip
    with pytest.raises(ValueError, match="run 'b': teachers_from 'a' is not a run of scenario diffuse2d"):
        teacher_seeds.load_runs(path)


def test_a_student_run_needs_its_teacher_trained(tmp_path):
    config = teacher_seeds.base_config({"scenario": "localized2d"}, tmp_path / "students")
    with pytest.raises(FileNotFoundError, match="teacher_seed2_teacher has no evaluated teacher"):
        teacher_seeds.train_student(config, tmp_path / "teachers" / "localized2d", 2, resume=True)


def test_markdown_shows_every_row_and_each_run_s_spread():
    config = teacher_seeds.base_config({"scenario": "localized2d"}, Path("out"))
    rows = [teacher_seeds.table_row("a", config, s, METRICS, 1.0) for s in (0, 1)]
    text = teacher_seeds.markdown(pd.DataFrame(rows, columns=teacher_seeds.COLUMNS))
    assert "| a | 1 | 0.840 | -0.30 | 0.830 | 90% | 0.020 | 0.870 (0.880) | 0.04 | removed |" in text
    assert "| a | 2 | 90%, 90% - 90% (0.00) | 2 of 2 |" in text


def test_a_finished_run_is_reused_only_with_the_same_settings_and_bundle_configs(tmp_path, monkeypatch):
    """Resume must not confuse runs: a changed default in a bundle's config retrains its runs."""
    import json

    from benchmarks import teacher_seeds

    config = tmp_path / "train.yaml"
    config.write_text("augmentation: flips\n")
    calls = []

    def fake_run_bundle(bundle, workflow, scenario, settings, log_config):
        calls.append(workflow)
        (tmp_path / settings["bundle_name"] / "eval").mkdir(parents=True, exist_ok=True)
        metrics = {"bias_free": {"auc": 0.9}, "bias_inverted": {"auc": 0.8}}
        (tmp_path / settings["bundle_name"] / "eval" / "metrics.json").write_text(json.dumps(metrics))

    monkeypatch.setattr(teacher_seeds, "run_bundle", fake_run_bundle)
    monkeypatch.setattr(teacher_seeds, "config_files", lambda bundle, workflow, scenario: [str(config)])
    settings = {"bundle_name": "t0", "seed": 0}
    teacher_seeds._train_and_evaluate("teacher", "localized2d", tmp_path, settings, resume=True)
    assert calls == ["train", "evaluate"]
    teacher_seeds._train_and_evaluate("teacher", "localized2d", tmp_path, settings, resume=True)
    assert calls == ["train", "evaluate"]  # same settings and configs: reused
    teacher_seeds._train_and_evaluate("teacher", "localized2d", tmp_path, {**settings, "seed": 1}, resume=True)
    assert len(calls) == 4  # other settings: retrained
    config.write_text("augmentation: flips_and_noise\n")
    assert not teacher_seeds.is_done("teacher", "localized2d", tmp_path, {**settings, "seed": 1})
    teacher_seeds._train_and_evaluate("teacher", "localized2d", tmp_path, {**settings, "seed": 1}, resume=True)
    assert len(calls) == 6  # a changed bundle config: retrained
    teacher_seeds._train_and_evaluate("teacher", "localized2d", tmp_path, {**settings, "seed": 1}, resume=False)
    assert len(calls) == 8  # without resume: always
