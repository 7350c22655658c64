"""The bundles' layers and saliency workflows: declared loaders, per-model outputs, the report's figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from monai.bundle import ConfigParser

from pipeline.bundles import config_files, run_bundle
from pipeline.bundles.cli import main
from pipeline.evaluation.saliency import read_saliency, saliency_grid_from_files

TINY = {"image_size": [32, 32], "batch_size": 16, "progress_bar": False, "tensorboard": False}


def parsed(workflow, settings):
    parser = ConfigParser()
    parser.read_config(config_files("baseline", workflow))
    parser.update(settings)
    return parser


@pytest.fixture(scope="module")
def trained(tiny_datalist_2d, tmp_path_factory):
    """Settings of a baseline run whose models/model.pt holds (untrained) weights."""
    settings = {**TINY, "datalist": str(tiny_datalist_2d), "output_root": str(tmp_path_factory.mktemp("runs")),
                "bundle_name": "erm"}  # fmt: skip
    torch.manual_seed(0)
    network = parsed("train", settings).get_parsed_content("network_def")
    checkpoint = Path(settings["output_root"]) / "erm" / "models" / "model.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(network.state_dict(), checkpoint)
    return settings


def test_workflows_merge_their_shared_config_last():
    assert config_files("baseline", "layers")[-1].endswith("bundles/common/configs/layers.yaml")
    assert config_files("teacher", "saliency", "diffuse2d")[-1].endswith("bundles/common/configs/saliency.yaml")
    with pytest.raises(ValueError, match="workflow 'probe' is unknown"):
        config_files("baseline", "probe")


def test_cli_runs_the_analyses(capsys):
    assert main(["baseline", "layers", "--scenario", "localized2d", "--print-only"]) == 0
    assert "layers.yaml" in capsys.readouterr().out


def test_declared_loaders_balance_the_bias_and_pair_the_counterfactuals(trained):
    loaders = parsed("layers", trained).get_parsed_content("layers#dataloaders")
    assert list(loaders) == ["probe_fit", "probe_eval", "cf_with", "cf_without"]
    fit = [b for b in loaders["probe_fit"]]
    labels, bias = torch.cat([b["label"] for b in fit]), torch.cat([b["bias"] for b in fit])
    for label in (0, 1):  # the artifact on about half of each class, not on the training rates
        assert 0.2 < bias[labels == label].float().mean() < 0.8
    with_ids = [i for b in loaders["cf_with"] for i in b["id"]]
    assert with_ids == [i for b in loaders["cf_without"] for i in b["id"]]
    assert with_ids == [i for b in loaders["probe_eval"] for i in b["id"]]
    assert all(b["bias"].eq(1).all() for b in loaders["cf_with"])
    assert all(b["bias"].eq(0).all() for b in loaders["cf_without"])


def test_layers_workflow_writes_the_models_tables(trained):
    run_bundle("baseline", "layers", settings=trained, log_config=False)
    folder = Path(trained["output_root"]) / "erm" / "layers"
    table = pd.read_csv(folder / "layers.csv")
    assert set(table["model"]) == {"erm"} and set(table["stage"]) == {"stage1", "stage2", "stage3", "stage4"}
    assert {"probe_auc_bias", "counterfactual_kl", "decided_bias1"} <= set(table["metric"])
    assert (folder / "prediction_depth.csv").is_file() and (folder / "layer_curves.png").is_file()


def test_layers_workflow_skips_pre_biased_data(trained, tmp_path):
    settings = {**trained, "artifact": None, "layers_dir": str(tmp_path / "layers")}
    run_bundle("baseline", "layers", settings=settings, log_config=False)
    assert not (tmp_path / "layers").exists()


def test_saliency_workflow_saves_maps_the_report_draws(trained, tmp_path):
    run_bundle("baseline", "saliency", settings=trained, log_config=False)
    folder = Path(trained["output_root"]) / "erm" / "saliency"
    images, maps = read_saliency(folder)
    assert images.shape == (4, 1, 32, 32) and maps.shape == (4, 1, 32, 32)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    out = saliency_grid_from_files({"erm": folder, "teacher": tmp_path / "none"}, tmp_path / "grid.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert saliency_grid_from_files({"teacher": tmp_path / "none"}, tmp_path / "no.png") is None
    with pytest.raises(ValueError, match="no saliency maps at"):
        read_saliency(tmp_path / "none")
