"""The scenario scripts' pieces: candidate files, resumable tables, run configs, the results page."""

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmarks import scenario_runs, scenario_validity


def test_candidates_file_must_map_names_to_mappings(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("noise: {_target_: pipeline.transforms.GaussianNoiseArtifact, std: 0.02}\n")
    assert scenario_validity.load_candidates(good)["noise"]["std"] == 0.02
    bad = tmp_path / "bad.yaml"
    bad.write_text("- noise\n")
    with pytest.raises(ValueError, match="bad.yaml.*must map names"):
        scenario_validity.load_candidates(bad)
    with pytest.raises(ValueError, match="does not exist"):
        scenario_validity.load_candidates(tmp_path / "missing.yaml")


def test_artifact_row_says_how_much_the_artifact_fools_the_model():
    metrics = {
        "bias_free": {"auc": 0.95, "tpr_bias0": 0.9},
        "bias_inverted": {"auc": 0.60},
        "cf_with": {"tpr_bias1": 0.99},
    }
    row = scenario_validity.artifact_row(metrics)
    assert row["fooled_by"] == pytest.approx(0.35)
    assert row["cf_delta_tpr"] == pytest.approx(0.09)


def test_rows_are_appended_and_kept(tmp_path):
    table = tmp_path / "t.csv"
    scenario_validity.append_row(table, {"candidate": "a", "auc": 0.5})
    scenario_validity.append_row(table, {"candidate": "b", "auc": 0.75})
    assert pd.read_csv(table)["candidate"].tolist() == ["a", "b"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_rerun_replaces_its_rows_in_place_and_keeps_the_others(tmp_path):
    table = tmp_path / "t.csv"
    for run, auc in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        scenario_validity.append_row(table, {"run": run, "auc": auc})
    scenario_runs.replace_rows(table, "b", [{"run": "b", "auc": 0.9}])
    assert pd.read_csv(table).values.tolist() == [["a", 0.1], ["b", 0.9], ["c", 0.3]]
    scenario_runs.replace_rows(table, "d", [{"run": "d", "auc": 0.4}])  # a new run is appended
    assert pd.read_csv(table)["run"].tolist() == ["a", "b", "c", "d"]
    scenario_runs.replace_rows(tmp_path / "new.csv", "a", [{"run": "a", "auc": 0.5}])
    assert pd.read_csv(tmp_path / "new.csv")["auc"].tolist() == [0.5]
    assert not list(tmp_path.glob("*.tmp*"))


def test_run_settings_go_on_top_of_the_experiment_config(tmp_path):
    config = scenario_runs.experiment_config(
        {"scenarios": ["diffuse2d"], "settings": {"max_epochs": 2}, "methods": ["erm", "reference"]}, tmp_path / "out"
    )
    assert config.scenarios == ["diffuse2d"] and config.methods == ["erm", "reference"]
    assert config.settings["max_epochs"] == 2 and "tensorboard" in config.settings  # merged, not replaced
    assert config.output == str(tmp_path / "out")
    with pytest.raises(ValueError, match="'epochs' is not an experiment setting"):
        scenario_runs.experiment_config({"epochs": 2}, tmp_path)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_runs.experiment_config({"scenarios": ["nowhere"]}, tmp_path)


def test_markdown_table_formats_numbers_and_gaps():
    table = pd.DataFrame({"run": ["a"], "auc": [0.91234], "gap": [float("nan")]})
    assert scenario_runs.markdown_table(table) == ["| run | auc | gap |", "| --- | --- | --- |", "| a | 0.912 | n/a |"]


def test_layer_figure_sets_the_runs_side_by_side(tmp_path):
    rows = []
    for run in ("localized2d", "diffuse2d"):
        folder = tmp_path / run / "report" / "layers" / run
        folder.mkdir(parents=True)
        pd.DataFrame(
            [{"model": "erm", "stage": f"stage{i}", "stage_index": i, "metric": "counterfactual_kl", "value": 0.1 * i}
             for i in range(1, 5)]
        ).to_csv(folder / "layers.csv", index=False)
        rows.append({"run": run, "scenario": run})
    table = pd.DataFrame(rows)
    tables = scenario_runs.layer_tables(table, tmp_path)
    out = scenario_runs.layer_figure(tables, tmp_path / "fig.png")
    assert out == tmp_path / "fig.png"
    with Image.open(out) as image:  # two runs side by side (4.2 in each), three metrics stacked (3 in each)
        assert image.format == "PNG" and image.size[0] / image.size[1] == pytest.approx(8.4 / 9.0, rel=0.02)
    assert scenario_runs.layer_figure(scenario_runs.layer_tables(table.iloc[:1], tmp_path), tmp_path / "one.png") is None
    stages = scenario_runs.stage_table(tables, "counterfactual_kl")
    assert list(stages.columns) == ["run", "model", "stage 1", "stage 2", "stage 3", "stage 4"]
    assert list(stages["run"]) == ["localized2d", "diffuse2d"] and list(stages["model"]) == ["erm", "erm"]
    assert stages.iloc[0, 2:].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_page_rows_follow_the_runs_file_order():
    table = pd.DataFrame({"run": ["diffuse2d", "extra", "localized2d", "diffuse3d"], "x": [1, 2, 3, 4]})
    ordered = scenario_runs.in_runs_order(table, ["localized2d", "diffuse2d", "localized3d", "diffuse3d"])
    assert list(ordered["run"]) == ["localized2d", "diffuse2d", "diffuse3d", "extra"]
    assert list(ordered["x"]) == [3, 1, 4, 2]


@pytest.mark.parametrize("runs_file", ["scenario_runs.yaml", "architecture_runs.yaml", "scenario_runs_64.yaml"])
def test_shipped_runs_files_are_valid_experiments(runs_file, tmp_path):
    from pathlib import Path

    runs = scenario_runs.load_runs(Path(scenario_runs.__file__).parent / "configs" / runs_file)
    configs = {name: scenario_runs.experiment_config(run, tmp_path / name) for name, run in runs.items()}
    assert configs and all(c.scenarios for c in configs.values())


def test_the_64_cubed_runs_are_their_scenarios_with_every_voxel_size_doubled():
    """The GPU runs must not drift from the scenario files: same data and artifact, twice the
    voxels, the local deformation's box at twice its coordinates (the same anatomy)."""
    from pathlib import Path

    import yaml

    from pipeline.bundles import BUNDLES_ROOT

    runs = scenario_runs.load_runs(Path(scenario_runs.__file__).parent / "configs" / "scenario_runs_64.yaml")
    assert {run["scenarios"][0] for run in runs.values()} == {"localized3d", "diffuse3d"}
    for name, run in runs.items():
        (scenario,) = run["scenarios"]
        base = yaml.safe_load((BUNDLES_ROOT / "common/configs/scenarios" / f"{scenario}.yaml").read_text())
        settings = run["settings"]
        assert settings["image_size"] == [2 * s for s in base["image_size"]], name
        for key in ("data_params", "source_data_params"):
            assert settings[key] == {**base[key], "size": 2 * base[key]["size"]}, (name, key)
        artifact = settings.get("artifact", base["artifact"])
        position = base["artifact"].get("position")
        doubled = [2 * p for p in position] if isinstance(position, list) else position
        assert artifact == {**base["artifact"], **({"position": doubled} if position is not None else {})}, name


def test_a_run_measures_the_shortcut_only_when_erm_learnt_it_and_the_reference_was_not_fooled():
    assert scenario_runs.measures_shortcut(erm=0.16, reference=0.93, reference_bias_free=0.97)
    assert not scenario_runs.measures_shortcut(erm=0.07, reference=0.15, reference_bias_free=0.52)  # nothing learnt
    assert not scenario_runs.measures_shortcut(erm=0.1, reference=0.5, reference_bias_free=0.97)  # fooled


def test_summary_row_scores_the_student_and_names_the_best_baseline_without_the_artifact(tmp_path):
    from pipeline.experiment import ExperimentConfig

    aucs = {"erm": (0.2, 0.88), "reference": (0.9, 0.97), "teacher": (0.95, 0.84), "distilled": (0.8, 0.87),
            "jtt": (0.15, 0.85), "group_dro": (0.7, 0.9), "random_artifact": (0.96, 0.96)}  # fmt: skip
    rows = [{"scenario": "localized2d", "method": m, "test_set": t, "auc": a}
            for m, (inverted, free) in aucs.items() for t, a in (("bias_inverted", inverted), ("bias_free", free))]  # fmt: skip
    report = tmp_path / "report"
    report.mkdir()
    pd.DataFrame(rows).to_csv(report / "results.csv", index=False)
    claims = {"gap_closed": 6 / 7, "distilled_verdict": "removed", "teacher_verdict": "over-corrected",
              "teacher_delta_tpr_counterfactual": -0.3, "distilled_flip_rate": 0.04}  # fmt: skip
    (report / "acceptance.json").write_text(json.dumps({"localized2d": claims}))
    config = ExperimentConfig(output=str(tmp_path), methods=list(aucs))
    (row,) = scenario_runs.summary_rows("r", config, 10.0)
    # random_artifact knows the artifact: it is not a baseline the student must beat
    assert row["best_baseline_without_artifact_auc"] == pytest.approx(0.7)
    assert row["best_agnostic_baseline_auc"] == pytest.approx(0.15)
    assert (row["erm_bias_free_auc"], row["teacher_bias_free_auc"], row["distilled_bias_free_auc"]) == (0.88, 0.84, 0.87)
    assert row["verdict"] == "removed" and row["teacher_verdict"] == "over-corrected"
    assert row["teacher_cf_delta_tpr"] == pytest.approx(-0.3) and row["distilled_flip_rate"] == pytest.approx(0.04)


def test_older_rows_are_rescored_from_the_page_headlines_and_newer_rows_kept(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Results\n\n| run | gap_closed |\n| --- | --- |\n| a | 0.5 |\n\n## a\n\n### localized2d\n\n"
        "| method | needs | bias-free AUC | ΔTPR (counterfactual) | flip rate |\n| --- | --- | --- | --- | --- |\n"
        "| erm | - | 0.880 | 0.76 | 0.84 |\n| teacher | x | 0.836 | -0.12 | 0.06 |\n| distilled | y | 0.875 | 0.27 | 0.14 |\n"
    )
    headlines = scenario_runs.page_headlines(page)
    assert headlines["a"]["teacher"]["ΔTPR (counterfactual)"] == "-0.12"
    table = pd.DataFrame({"run": ["a", "b"], "erm_bias_free_auc": [float("nan"), 0.9], "verdict": [None, "removed"]})
    rescored = scenario_runs.rescore(table, headlines)
    a, b = rescored.iloc[0], rescored.iloc[1]
    assert (a["erm_bias_free_auc"], a["distilled_bias_free_auc"], a["distilled_flip_rate"]) == (0.88, 0.875, 0.14)
    assert a["verdict"] == "kept" and a["teacher_verdict"] == "over-corrected"
    assert b["verdict"] == "removed" and b["erm_bias_free_auc"] == 0.9  # measured with the columns: untouched


def test_validity_scores_a_model_in_the_network_it_was_trained_with(tmp_path, monkeypatch):
    """A ResNet-18 reference is evaluated as a ResNet-18 (its run_settings.json), not the scenario's small_cnn;
    the candidate's own settings still win."""
    models = tmp_path / "localized2d" / "reference" / "models"
    models.mkdir(parents=True)
    (models / "run_settings.json").write_text(json.dumps({
        "network_name": "resnet18", "network_options": {"conv1_t_stride": 2}, "spatial_dims": 2,
        "artifact": {"_target_": "PatchArtifact"}, "learning_rate": 0.1,
    }))  # fmt: skip
    seen = {}

    def fake_run_bundle(bundle, workflow, scenario, settings, log_config):
        seen.update(settings)
        (Path(settings["evaluate_dir"]) / "metrics.json").write_text(json.dumps({"bias_free": {"auc": 0.9}}))

    monkeypatch.setattr(scenario_validity, "run_bundle", fake_run_bundle)
    out = tmp_path / "out"
    out.mkdir()
    metrics = scenario_validity.evaluate_reference(tmp_path, "localized2d", {"artifact": {"std": 0.02}}, out)
    assert metrics == {"bias_free": {"auc": 0.9}}
    assert seen["network_name"] == "resnet18" and seen["network_options"] == {"conv1_t_stride": 2}
    assert seen["spatial_dims"] == 2
    assert seen["artifact"] == {"std": 0.02} and "learning_rate" not in seen
    assert scenario_validity.trained_network_settings(tmp_path / "missing") == {}
    (models / "run_settings.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="run_settings.json: expected a JSON object"):
        scenario_validity.trained_network_settings(tmp_path / "localized2d" / "reference")


def test_the_reused_column_names_each_scenarios_copied_methods_and_their_run():
    reused = {
        "localized2d/erm": "/x/runs/architectures/resnet18_localized2d",
        "localized2d/reference": "/x/runs/architectures/resnet18_localized2d",
        "localized2d/source": "/x/runs/architectures/other",
        "diffuse2d/erm": "/x/runs/architectures/third",
    }
    assert scenario_runs.reused_note(reused, "localized2d") == "erm, reference <- resnet18_localized2d; source <- other"
    assert scenario_runs.reused_note(reused, "diffuse2d") == "erm <- third"
    assert scenario_runs.reused_note(reused, "localized3d") == "" == scenario_runs.reused_note({}, "localized2d")
