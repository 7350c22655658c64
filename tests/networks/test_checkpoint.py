"""load_checkpoint: MONAI CheckpointSaver files and plain state dicts, strict and partial."""

import logging

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointSaver
from torch import nn

from pipeline.networks import build_network, load_checkpoint

OPTIONS = dict(channels=[4, 8])


def small(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return build_network("small_cnn", 2, 1, num_classes, **OPTIONS)


def assert_same_weights(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if k not in skip:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_round_trip_monai_checkpoint_saver(tmp_path):
    source = small(seed=1)
    optimizer = torch.optim.Adam(source.parameters())
    engine = Engine(lambda engine, batch: None)
    CheckpointSaver(str(tmp_path), {"network": source, "optimizer": optimizer}, save_final=True).attach(
        engine
    )
    engine.run([0], max_epochs=1)
    (path,) = tmp_path.glob("*.pt")
    target = small(seed=2)
    report = load_checkpoint(target, path)
    assert report.key == "network" and report.complete
    assert_same_weights(source, target)


def test_round_trip_plain_state_dict_and_ddp_prefix(tmp_path):
    source = small(seed=1)
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save(nn.DataParallel(source).state_dict(), tmp_path / "ddp.pt")  # keys start with "module."
    for name, target in [
        ("plain.pt", small(seed=2)),
        ("ddp.pt", small(seed=3)),
        ("plain.pt", nn.DataParallel(small(seed=4))),
    ]:
        report = load_checkpoint(target, tmp_path / name)
        assert report.key is None and report.complete
        assert_same_weights(source, target.module if isinstance(target, nn.DataParallel) else target)


def test_key_selects_entry_and_ambiguity_is_reported(tmp_path):
    teacher, student = small(seed=1), small(seed=2)
    path = tmp_path / "two.pt"
    torch.save({"teacher": teacher.state_dict(), "student": student.state_dict(), "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"two.pt.*state-dict entries: \['student', 'teacher'\].*pass key="):
        load_checkpoint(small(), path)
    target = small(seed=5)
    assert load_checkpoint(target, path, key="student").key == "student"
    assert_same_weights(student, target)
    with pytest.raises(ValueError, match=r"no entry key='ema'"):
        load_checkpoint(target, path, key="ema")
    with pytest.raises(ValueError, match="'epoch' .* is not a state dict"):
        load_checkpoint(target, path, key="epoch")


def test_single_state_dict_entry_is_found(tmp_path):
    source = small(seed=1)
    torch.save({"weights": source.state_dict(), "epoch": 3}, tmp_path / "one.pt")
    target = small(seed=2)
    assert load_checkpoint(target, tmp_path / "one.pt").key == "weights"
    assert_same_weights(source, target)


def test_strict_failure_names_file_and_keys_and_loads_nothing(tmp_path):
    path = tmp_path / "two_classes.pt"
    torch.save({"network": small(2, seed=1).state_dict()}, path)
    target = small(3, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=r"(?s)two_classes\.pt.*shape-mismatched \(2\): fc.weight, fc.bias.*\(2, 8\) vs model \(3, 8\)",
    ):
        load_checkpoint(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_partial_load_reports_skipped_keys(tmp_path, caplog):
    source = small(2, seed=1)
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["stage1.0.conv.weight"]
    path = tmp_path / "other_head.pt"
    torch.save({"model": state}, path)
    target = small(3, seed=2)
    untouched = {k: target.state_dict()[k].clone() for k in ("fc.weight", "stage1.0.conv.weight")}
    with caplog.at_level(logging.WARNING, logger="pipeline.networks.checkpoint"):
        report = load_checkpoint(target, path, strict=False)
    assert report.key == "model"
    assert report.shape_mismatched_keys == ("fc.weight", "fc.bias")
    assert report.missing_keys == ("stage1.0.conv.weight",)
    assert report.unexpected_keys == ("extra.weight",)
    assert "stage2.0.conv.weight" in report.loaded_keys and "fc.weight" not in report.loaded_keys
    assert_same_weights(source, target, skip={"fc.weight", "fc.bias", "stage1.0.conv.weight"})
    for k, v in untouched.items():
        assert torch.equal(target.state_dict()[k], v)
    assert "other_head.pt" in caplog.text and "fc.weight" in caplog.text and "extra.weight" in caplog.text


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(small(), tmp_path / "missing.pt")
    pickled = tmp_path / "whole_model.pt"
    torch.save(small(), pickled)  # a pickled module, refused by weights_only=True
    with pytest.raises(ValueError, match="whole_model.pt.*weights_only=True"):
        load_checkpoint(small(), pickled)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="list.pt holds a list"):
        load_checkpoint(small(), listed)
