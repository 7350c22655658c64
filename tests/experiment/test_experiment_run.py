"""The experiment runner on tiny data: every step a bundle workflow, then a verifiable report."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

from pipeline.evaluation.protocol import counterfactual_delta_tpr
from pipeline.evaluation.verification import verify_report
from pipeline.experiment import (
    MANIFEST,
    ExperimentConfig,
    fresh_output,
    main,
    ordered_methods,
    run_experiment,
    run_settings,
)

TINY = {"image_size": [32, 32], "max_epochs": 1, "batch_size": 16, "progress_bar": False,
        "tensorboard": False, "probe_epochs": 1}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_experiment(tiny_datalist_2d, tmp_path_factory):
    output = tmp_path_factory.mktemp("experiment")
    config = ExperimentConfig(
        output=str(output),
        methods=["jtt", "distilled", "erm", "teacher", "reference", "source"],
        settings={**TINY, "datalist": str(tiny_datalist_2d), "source_datalist": str(tiny_datalist_2d)},
    )
    return config, run_experiment(config)


def test_methods_run_in_dependency_order():
    assert ordered_methods(["jtt", "distilled", "teacher", "erm"]) == ["erm", "teacher", "distilled", "jtt"]
    assert ordered_methods(["teacher", "source"]) == ["source", "teacher"]


def test_teacher_starts_from_the_source_model_only_when_it_is_in_the_experiment(tmp_path):
    with_source = ExperimentConfig(output=str(tmp_path), methods=["source", "teacher"])
    settings = run_settings(with_source, "localized2d", "teacher")
    assert settings["init_checkpoint"] == str(
        tmp_path.absolute() / "localized2d" / "source" / "models" / "model.pt"
    )
    assert "init_checkpoint" not in run_settings(with_source, "localized2d", "erm")
    alone = ExperimentConfig(output=str(tmp_path), methods=["teacher"])
    assert "init_checkpoint" not in run_settings(alone, "localized2d", "teacher")


def test_report_numbers_are_recomputed_from_the_prediction_files(tiny_experiment):
    _, report = tiny_experiment
    assert verify_report(report) == []
    results = pd.read_csv(report / "results.csv")
    assert set(results["method"]) == {"source", "erm", "reference", "teacher", "distilled", "jtt"}
    assert {"in_distribution", "bias_free", "bias_inverted", "cf_with", "cf_without"} <= set(
        results["test_set"]
    )
    assert "bias_inverted" in (report / "results.md").read_text()
    headline = (report / "headline.md").read_text()
    erm = results[(results["method"] == "erm") & (results["test_set"] == "bias_inverted")]["auc"].iloc[0]
    assert "| erm | - | " in headline and f"{erm:.3f}" in next(
        line for line in headline.splitlines() if line.startswith("| erm |")
    )


def test_report_has_configs_figures_and_acceptance_summary(tiny_experiment):
    config, report = tiny_experiment
    for method in config.methods:
        assert (report / "configs" / f"localized2d_{method}.yaml").is_file()
    teacher_config = yaml.safe_load((report / "configs" / "localized2d_teacher.yaml").read_text())
    assert teacher_config["init_checkpoint"].endswith("localized2d/source/models/model.pt")
    assert (report / "figures" / "saliency_localized2d.png").is_file()
    layers = pd.read_csv(report / "layers" / "localized2d" / "layers.csv")
    assert set(layers["model"]) == {"erm", "reference", "teacher", "distilled"}
    scenario = report.parent / "localized2d"
    for method in ("erm", "reference", "teacher", "distilled"):  # the bundles' analysis workflows wrote them
        assert (scenario / method / "layers" / "layers.csv").is_file()
        assert (scenario / method / "saliency" / "saliency.npz").is_file()
    assert not (scenario / "source" / "layers").exists() and not (scenario / "jtt" / "saliency").exists()
    summary = json.loads((report / "acceptance.json").read_text())["localized2d"]
    assert summary["erm_gap"] == pytest.approx(
        summary["reference_bias_inverted_auc"] - summary["erm_bias_inverted_auc"]
    )
    assert "gap_closed" in summary and "teacher_bias_free_auc" in summary
    erm = json.loads((report.parent / "localized2d" / "erm" / "eval" / "metrics.json").read_text())
    assert summary["erm_delta_tpr_counterfactual"] == pytest.approx(
        erm["cf_with"]["tpr_bias1"] - erm["bias_free"]["tpr_bias0"]
    )


def test_counterfactual_delta_tpr_pairs_the_with_and_without_artifact_test_sets():
    metrics = {"cf_with": {"tpr_bias1": 0.9}, "bias_free": {"tpr_bias0": 0.6}}
    assert counterfactual_delta_tpr(metrics) == pytest.approx(0.3)
    assert counterfactual_delta_tpr({"bias_free": {"tpr_bias0": 0.6}}) is None


def _resume_args(config, output, *changes):
    settings = [f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in config.settings.items()]
    args = ["--config", "default.yaml", "--output", str(output), "--methods", "erm", "--resume"]
    return args + [a for setting in (*settings, *changes) for a in ("--set", setting)]


def test_resume_skips_finished_methods(tiny_experiment, capsys, tmp_path):
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    report = output / "report"
    before = (report / "results.csv").stat().st_mtime_ns
    assert main(_resume_args(config, output)) == 0
    out = capsys.readouterr().out
    assert "erm (baseline): done before, skipped" in out
    assert "erm (baseline): layers done before, skipped" in out and "erm (baseline): saliency done before" in out
    assert (report / "results.csv").stat().st_mtime_ns != before  # the report is rewritten


def test_resume_reruns_a_method_whose_settings_changed(tiny_experiment, capsys, tmp_path):
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    metrics = output / "localized2d" / "erm" / "eval" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    assert main(_resume_args(config, output, "max_epochs=2", "seed=7")) == 0
    out = capsys.readouterr().out
    assert "erm (baseline): its settings or data (or a method it uses) changed since it ran: rerun" in out
    assert "erm (baseline): layers\n" in out  # the analyses of the retrained model are redone too
    assert metrics.stat().st_mtime_ns != before
    final = torch.load(output / "localized2d" / "erm" / "models" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2 * final["trainer"]["epoch_length"]
    assert main(_resume_args(config, output, "max_epochs=2", "seed=7")) == 0  # now it is up to date
    assert "erm (baseline): done before, skipped" in capsys.readouterr().out


def test_resume_continues_an_interrupted_training(tiny_experiment, capsys, tmp_path):
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    erm = output / "localized2d" / "erm"
    (erm / "eval" / "metrics.json").unlink()  # as if killed after training, before its evaluation
    (erm / "models" / "checkpoint_final.pt").unlink()
    assert main(_resume_args(config, output)) == 0
    assert "erm (baseline): continuing its interrupted training" in capsys.readouterr().out
    final = torch.load(erm / "models" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"]  # no epoch trained again
    assert (erm / "eval" / "metrics.json").is_file()


def test_fresh_deletes_only_what_the_experiment_wrote(tiny_experiment, tmp_path):
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    (output / "notes.txt").write_text("mine")
    fresh_output(output)
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]


def test_fresh_refuses_a_folder_the_experiment_did_not_write(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    assert main(["--output", str(tmp_path), "--fresh", "--methods", "erm"]) == 2
    assert f"{tmp_path} is not empty and has no {MANIFEST} marker" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_bad_experiment_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        ExperimentConfig(methods=["erm", "magic"]).validate()
    with pytest.raises(ValueError, match="needs \\['teacher'\\]"):
        ExperimentConfig(methods=["distilled"]).validate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios: [localized2d]\nepochs: 3\n")
    with pytest.raises(ValueError, match="unknown key"):
        ExperimentConfig.load(bad)


def test_fresh_keeps_files_the_user_put_among_the_experiments(tiny_experiment, tmp_path):
    """Issue 27, row 5: the marker made every file of the folder the experiment's."""
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    (output / "localized2d" / "erm" / "my_notes.txt").write_text("mine")
    fresh_output(output)
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == [
        "localized2d", "localized2d/erm", "localized2d/erm/my_notes.txt"
    ]


def test_fresh_does_not_follow_a_symlinked_scenario_folder(tiny_experiment, tmp_path, capsys):
    """Issue 27: ``--fresh`` on a scenario folder that is a symlink failed with "Cannot call
    rmtree on a symbolic link", naming no path."""
    config, _ = tiny_experiment
    output, elsewhere = tmp_path / "copy", tmp_path / "elsewhere"
    shutil.copytree(config.output, output)
    shutil.move(str(output / "localized2d"), elsewhere)
    (output / "localized2d").symlink_to(elsewhere, target_is_directory=True)
    notes = fresh_output(output)
    assert notes == [f"--fresh: {output / 'localized2d'} is a symbolic link (to {elsewhere}); not followed, "
                     "what the experiment wrote behind it is left in place"]  # fmt: skip
    assert (elsewhere / "erm" / "eval" / "metrics.json").is_file()
    assert not (output / "report").exists() and (output / "localized2d").is_symlink()


def test_resume_after_the_datalist_was_deleted_is_an_error(tiny_experiment, tmp_path, capsys):
    """Issue 27, row 7: ``--resume`` after the datalist was deleted said "done before" and exited 0."""
    config, _ = tiny_experiment
    output = tmp_path / "copy"
    shutil.copytree(config.output, output)
    datalist = tmp_path / "gone" / "datalist.json"
    args = _resume_args(config, output, f"datalist={datalist}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"datalist '{datalist}' (config id 'datalist') does not exist" in err and "Traceback" not in err


def _one_method_experiment(tiny_datalist_2d, tmp_path):
    """A datalist of the fixture's images (absolute paths) that the test may change, and an
    experiment file for ERM alone on it, without analyses."""
    content = json.loads(tiny_datalist_2d.read_text())
    for items in (v for v in content.values() if isinstance(v, list)):
        for item in items:
            item["image"] = str(tiny_datalist_2d.parent / item["image"])
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(content))
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(tmp_path / "out"), "scenarios": ["localized2d"], "methods": ["erm"],
        "settings": {**TINY, "datalist": str(datalist)}, "layer_analysis": False, "saliency": False,
    }))  # fmt: skip
    return content, datalist, config


def test_resume_after_the_datalist_content_changed_reruns_on_the_new_test_set(tiny_datalist_2d, tmp_path, capsys):
    """Issue 27, row 6: ``--resume`` after the datalist's content changed said "done before,
    skipped" and the report kept the old test set. Same datalist path, four test items fewer."""
    content, datalist, config = _one_method_experiment(tiny_datalist_2d, tmp_path)
    assert main(["--config", str(config), "--resume"]) == 0
    capsys.readouterr()
    kept = content["test"] = content["test"][:-4]
    datalist.write_text(json.dumps(content))
    assert main(["--config", str(config), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "erm (baseline): its settings or data (or a method it uses) changed since it ran: rerun" in out
    assert "done before, skipped" not in out
    results = pd.read_csv(tmp_path / "out" / "report" / "results.csv").set_index("test_set")
    assert results.loc["bias_free", "n"] == len(kept)
    predictions = pd.read_csv(tmp_path / "out" / "report" / results.loc["bias_free", "predictions"])
    assert set(predictions["id"].astype(str)) == {str(item["id"]) for item in kept}
    assert main(["--config", str(config), "--resume"]) == 0  # unchanged since: skipped
    assert "erm (baseline): done before, skipped" in capsys.readouterr().out


@pytest.mark.usefixtures("isolated_logging")
def test_a_training_on_a_full_disk_is_one_line_naming_the_step_and_its_log(tiny_datalist_2d, tmp_path, capsys, monkeypatch):
    """Issue 27: a disk filling up during the experiment's training gave inline_container.cc's
    message in a traceback. Now one line naming the step, the folder and its log; no checkpoint
    (whole or partial) stays, and the output folder's lock is released."""
    _, _, config = _one_method_experiment(tiny_datalist_2d, tmp_path)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", full)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    erm = tmp_path / "out" / "localized2d" / "erm"
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("python -m pipeline.experiment: error: [1/1] localized2d erm (baseline): train: ")
    assert f"could not be written in {erm}" in err and f"its log: {erm / 'log.txt'}" in err
    assert not [p.name for p in (erm / "models").iterdir() if p.suffix == ".pt" or p.name.startswith("tmp")]
    assert not (tmp_path / "out" / ".lock").exists()


def test_another_experiment_reuses_the_trainings_it_shares_and_trains_the_rest(tiny_experiment, tmp_path, capsys):
    from pathlib import Path

    from pipeline.experiment.reuse import REUSED_FROM, reuse_trainings

    config, _ = tiny_experiment
    # the same ERM; a reference with another seed
    other = ExperimentConfig(output=str(tmp_path / "other"), methods=["erm", "reference"], settings=dict(config.settings),
                             method_settings={"reference": {"seed": 7}}, layer_analysis=False, saliency=False)  # fmt: skip
    copied = reuse_trainings(other, [config.output, tmp_path / "missing"])
    assert copied == {"localized2d/erm": str(Path(config.output).absolute())}
    erm = tmp_path / "other" / "localized2d" / "erm"
    assert json.loads((erm / REUSED_FROM).read_text())["experiment"] == str(Path(config.output).absolute())
    assert not (tmp_path / "other" / "localized2d" / "reference").exists()
    run_experiment(other, resume=True)
    out = capsys.readouterr().out
    assert "erm (baseline): done before, skipped" in out
    assert "localized2d reference (baseline): train" in out  # its own seed: trained here
    reference = tmp_path / "other" / "localized2d" / "reference"
    assert (reference / "eval" / "metrics.json").is_file() and not (reference / REUSED_FROM).exists()
    # the copy is the same result: the other experiment's ERM metrics and weights, byte for byte
    for name in ("eval/metrics.json", "models/model.pt"):
        assert (erm / name).read_bytes() == (Path(config.output) / "localized2d" / "erm" / name).read_bytes()
    # and the report keeps the config of every method, the reused one too
    configs = tmp_path / "other" / "report" / "configs"
    assert sorted(p.name for p in configs.glob("*.yaml")) == ["localized2d_erm.yaml", "localized2d_reference.yaml"]
    assert reuse_trainings(other, [config.output]) == {}  # already there with that fingerprint
