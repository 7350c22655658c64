"""Teacher bundle with the self-supervised pretraining override (configs/pretrain.yaml), tiny 2D run."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import run_workflow, tiny_settings, workflow
from ignite.engine import Events

from pipeline.bundles import BUNDLES_ROOT
from pipeline.distillation.teacher import load_teacher
from pipeline.engine.datalist import load_role
from pipeline.networks import build_network, load_checkpoint

PRETRAIN = BUNDLES_ROOT / "teacher" / "configs" / "pretrain.yaml"


def _state(network):
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


@pytest.fixture(scope="module")
def pretrained_teacher(tiny_datalist_2d, tmp_path_factory):
    """One tiny teacher run with pretraining; weights at start-up and when the teacher's training starts."""
    root = tmp_path_factory.mktemp("runs")
    settings = tiny_settings(
        tiny_datalist_2d, root, probe_epochs=1, pretrain_epochs=1, pretrain_batch_size=16
    )
    wf = workflow("teacher", "train", settings, overrides=[PRETRAIN])
    network = wf.parser.get_parsed_content("network")
    snapshots = {"initial": _state(network)}
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(
        Events.STARTED, lambda _: snapshots.setdefault("teacher_start", _state(network))
    )
    wf.run()
    wf.finalize()
    return root / "teacher" / "models", wf, snapshots


def test_pretraining_writes_weights_and_teacher(pretrained_teacher):
    models, wf, _ = pretrained_teacher
    assert wf.parser.get_parsed_content("pretraining#trainer").state.epoch == 1
    assert (models / "pretrained.pt").is_file()
    teacher = load_teacher(models / "teacher.pt")
    assert teacher.spec.network_name == "small_cnn"


def test_teacher_training_starts_from_the_pretrained_weights(pretrained_teacher):
    models, _, snapshots = pretrained_teacher
    pretrained = torch.load(models / "pretrained.pt", weights_only=True)
    start, initial = snapshots["teacher_start"], snapshots["initial"]
    assert set(pretrained) == set(start)  # the network's own state dict, no projection head
    for name, value in pretrained.items():
        assert torch.equal(start[name], value), name
    changed = [name for name in pretrained if not torch.equal(pretrained[name], initial[name])]
    assert "stage1.0.conv.weight" in changed and "stage4.0.conv.weight" in changed


def test_pretraining_reads_the_biased_training_role(pretrained_teacher, tiny_datalist_2d):
    _, wf, _ = pretrained_teacher
    items = wf.parser.get_parsed_content("pretraining#items")
    assert [i["id"] for i in items] == [i["id"] for i in load_role(tiny_datalist_2d, "train")]
    assert wf.parser.get_parsed_content("pretraining#injection").injection.mode == "as_trained"


def test_pretraining_runs_on_3d_volumes(tiny_datalist_3d, tmp_path):
    settings = tiny_settings(
        tiny_datalist_3d, tmp_path, spatial_dims=3, size=16, batch_size=4, probe_epochs=1, pretrain_epochs=1
    )
    settings["pretrain_batch_size"] = 4
    settings["artifact"] = {"_target_": "pipeline.transforms.ContrastArtifact", "factor": 1.2}
    wf = run_workflow("teacher", "train", settings, overrides=[PRETRAIN])
    views = wf.parser.get_parsed_content("pretraining#dataset")[0]
    assert views["image"].shape == views["image_2"].shape == (1, 16, 16, 16)
    network = build_network("small_cnn", 3, 1, 2)
    assert load_checkpoint(network, tmp_path / "teacher" / "models" / "pretrained.pt", strict=True).complete
