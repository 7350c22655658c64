"""Every bundle through MONAI's ConfigWorkflow on tiny data: train, resume, evaluate, infer."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from bundle_helpers import run_workflow, tiny_settings, workflow

from pipeline.distillation.teacher import load_teacher
from pipeline.engine.datalist import load_role
from pipeline.networks import build_network, load_checkpoint


@pytest.fixture(scope="module")
def trained_runs(tiny_datalist_2d, tmp_path_factory):
    """Baseline, teacher and distillation trained once (one epoch each) into one output root."""
    root = tmp_path_factory.mktemp("runs")
    settings = tiny_settings(tiny_datalist_2d, root)
    engines = {}
    for bundle, extra in (("baseline", {}), ("teacher", {"probe_epochs": 1}), ("distillation", {})):
        wf = run_workflow(bundle, "train", {**settings, **extra})
        engines[bundle] = wf.parser.get_parsed_content("train#trainer")
    return root, settings, engines


@pytest.mark.parametrize("bundle", ["baseline", "teacher", "distillation"])
def test_training_writes_best_and_final_checkpoints(trained_runs, bundle):
    root, _, engines = trained_runs
    assert engines[bundle].state.epoch == 1
    models = root / bundle / "models"
    network = build_network("small_cnn", 2, 1, 2)
    assert load_checkpoint(network, models / "model.pt").complete
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    assert {"network", "optimizer", "trainer"} <= set(final)


def test_teacher_checkpoint_holds_network_and_fitted_probes(trained_runs):
    root, _, _ = trained_runs
    teacher = load_teacher(root / "teacher" / "models" / "teacher.pt")
    assert teacher.spec.stages == ["stage1", "stage2", "stage3", "stage4"]
    assert not any(p.requires_grad for p in teacher.network.parameters())
    features = {s: torch.randn(2, c, 4, 4) for s, c in zip(teacher.spec.stages, (16, 32, 64, 128))}
    logits = teacher.probes(features)
    assert all(v.shape == (2, 2) for v in logits.values())


def test_resume_continues_from_saved_epoch(trained_runs):
    root, settings, engines = trained_runs
    first_iterations = engines["baseline"].state.iteration
    wf = run_workflow("baseline", "train", {**settings, "max_epochs": 2, "resume": True})
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * first_iterations  # epoch 1 was restored, not repeated


@pytest.mark.parametrize("bundle", ["baseline", "distillation"])
def test_evaluate_writes_predictions_and_metrics(trained_runs, tiny_datalist_2d, bundle):
    root, settings, _ = trained_runs
    run_workflow(bundle, "evaluate", settings)
    out = root / bundle / "eval"
    n_test = len(load_role(tiny_datalist_2d, "test"))
    for name in ("in_distribution", "bias_free", "bias_inverted", "cf_with"):
        frame = pd.read_csv(out / f"predictions_{name}.csv")
        assert list(frame.columns) == ["id", "label", "bias", "prob", "pred"]
        assert len(frame) == n_test
        assert frame["prob"].between(0, 1).all()
    assert pd.read_csv(out / "predictions_bias_free.csv")["bias"].eq(0).all()
    assert pd.read_csv(out / "predictions_cf_with.csv")["bias"].eq(1).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"in_distribution", "bias_free", "bias_inverted", "cf_with"}
    assert 0.0 <= metrics["bias_free"]["auc"] <= 1.0


def test_inference_on_a_folder_writes_one_row_per_image(trained_runs, tiny_datalist_2d):
    root, settings, _ = trained_runs
    folder = tiny_datalist_2d.parent / "images"
    run_workflow("baseline", "inference", {**settings, "input": str(folder)})
    table = pd.read_csv(root / "baseline" / "inference" / "predictions.csv", header=None)
    assert len(table) == len(list(folder.glob("*.png")))
    assert table[[1, 2]].sum(axis=1).round(5).eq(1.0).all()


def test_reference_is_the_baseline_with_injection_off(tiny_datalist_2d, tmp_path):
    settings = tiny_settings(tiny_datalist_2d, tmp_path, train_bias_mode="never", bundle_name="reference")
    wf = workflow("baseline", "train", settings)
    assert wf.parser.get_parsed_content("train#injection").injection.mode == "never"
    assert wf.parser.get_parsed_content("output_dir").endswith("reference")


def test_baseline_trains_and_evaluates_on_3d_volumes(tiny_datalist_3d, tmp_path):
    settings = tiny_settings(tiny_datalist_3d, tmp_path, spatial_dims=3, size=16, batch_size=4)
    settings["artifact"] = {"_target_": "pipeline.transforms.ContrastArtifact", "factor": 1.2}
    wf = run_workflow("baseline", "train", settings)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    run_workflow("baseline", "evaluate", settings)
    frame = pd.read_csv(tmp_path / "baseline" / "eval" / "predictions_bias_inverted.csv")
    assert len(frame) == len(load_role(tiny_datalist_3d, "test"))
