"""Each mitigation baseline is an override file of the baseline bundle and trains on MONAI's engine."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from bundle_helpers import run_workflow, tiny_settings

from pipeline.bundles import BUNDLES_ROOT
from pipeline.engine.datalist import load_role
from pipeline.networks import build_network, load_checkpoint

MITIGATION = BUNDLES_ROOT / "baseline" / "configs" / "mitigation"


@pytest.fixture(scope="module")
def erm_root(tiny_datalist_2d, tmp_path_factory):
    root = tmp_path_factory.mktemp("mitigation")
    run_workflow("baseline", "train", tiny_settings(tiny_datalist_2d, root))
    return root


def _run(name, datalist, root, **extra):
    settings = tiny_settings(datalist, root, **extra)
    return run_workflow("baseline", "train", settings, overrides=[MITIGATION / f"{name}.yaml"])


@pytest.mark.parametrize("name", ["augmentation", "random_artifact", "group_balanced", "group_reweight"])
def test_override_trains_into_its_own_folder(name, tiny_datalist_2d, erm_root):
    wf = _run(name, tiny_datalist_2d, erm_root)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (erm_root / name / "models" / "model.pt").is_file()


def test_group_dro_updates_and_saves_its_group_weights(tiny_datalist_2d, erm_root):
    wf = _run("group_dro", tiny_datalist_2d, erm_root, group_dro_eta=0.5)
    weights = wf.parser.get_parsed_content("loss").group_weights
    assert not torch.allclose(weights, torch.full_like(weights, 0.25))
    saved = torch.load(erm_root / "group_dro" / "models" / "checkpoint_final.pt", weights_only=True)
    assert torch.allclose(saved["loss"]["group_weights"], weights)


def test_jtt_repeats_the_erm_errors(tiny_datalist_2d, erm_root, tmp_path):
    torch.manual_seed(0)  # an untrained identification model: plenty of errors to upweight
    torch.save(build_network("small_cnn").state_dict(), tmp_path / "untrained.pt")
    wf = _run(
        "jtt", tiny_datalist_2d, erm_root, jtt_upweight=3, erm_checkpoint=str(tmp_path / "untrained.pt")
    )
    items = wf.parser.get_parsed_content("train#items")
    predictions = pd.read_csv(erm_root / "jtt" / "identification" / "predictions_train.csv")
    n_train = len(load_role(tiny_datalist_2d, "train"))
    assert len(predictions) == n_train  # the ERM model saw every training item, with its artifact
    errors = set(predictions.loc[predictions["pred"] != predictions["label"], "id"].astype(str))
    assert errors and len(errors) < n_train
    counts = pd.Series([str(item["id"]) for item in items]).value_counts()
    assert set(counts[counts == 3].index) == errors
    assert counts.drop(list(errors)).eq(1).all()


def test_dfr_changes_only_the_last_layer_of_the_erm_model(tiny_datalist_2d, erm_root):
    _run("dfr", tiny_datalist_2d, erm_root)
    erm, dfr = build_network("small_cnn"), build_network("small_cnn")
    load_checkpoint(erm, erm_root / "baseline" / "models" / "model.pt")
    load_checkpoint(dfr, erm_root / "dfr" / "models" / "checkpoint_final.pt")
    changed = {k for k, v in dfr.state_dict().items() if not torch.equal(v, erm.state_dict()[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_source_model_trains_on_the_external_datalist_and_evaluates_on_the_scenarios(
    tiny_datalist_2d, tmp_path
):
    from bundle_helpers import workflow

    source = BUNDLES_ROOT / "baseline" / "configs" / "source.yaml"
    import shutil

    external = shutil.copytree(tiny_datalist_2d.parent, tmp_path / "external") / tiny_datalist_2d.name
    settings = tiny_settings(tiny_datalist_2d, tmp_path, source_datalist=str(external))
    wf = run_workflow("baseline", "train", settings, overrides=[source])
    train_items = wf.parser.get_parsed_content("train#items")
    assert train_items == load_role(external, "train")
    assert wf.parser.get_parsed_content("validate#items") == load_role(external, "validation")
    assert (
        wf.parser.get_parsed_content("train#injection").injection.mode == "never"
    )  # no artifact at the source
    assert (tmp_path / "source" / "models" / "model.pt").is_file()
    evaluation = workflow("baseline", "evaluate", settings, overrides=[source])
    assert evaluation.parser.get_parsed_content("datalist") == str(tiny_datalist_2d)  # the scenario's tests
    # every scenario names its external dataset, and the 2D one is valid for the generator
    from monai.bundle import ConfigParser

    from data_prep.embedded import content_arguments
    from pipeline.bundles import config_files, scenario_names

    for scenario in scenario_names():
        parser = ConfigParser()
        parser.read_config(config_files("baseline", "train", scenario, [source]))
        params = parser.get_parsed_content("source_data_params")
        assert params["seed"] != parser.get_parsed_content("data_params").get("seed", 0), scenario
        content_arguments(parser.get_parsed_content("data_source"), params)  # valid generator arguments
