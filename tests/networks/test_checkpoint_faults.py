"""Corrupt and foreign checkpoints: errors that name the file and what was expected."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

from pipeline.distillation.teacher import TeacherSpec, load_teacher, save_teacher
from pipeline.networks import build_network, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from bundle_helpers import tiny_settings  # noqa: E402


def _teacher_file(tmp_path) -> Path:
    spec = TeacherSpec("small_cnn", 2, 1, 2, stages=["stage1", "stage2"])
    return save_teacher(tmp_path / "teacher.pt", spec.build_network(), spec.build_probes(), spec)


def _random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def _truncated(path: Path) -> Path:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


@pytest.mark.parametrize("damage", [_random_bytes, _truncated])
def test_a_damaged_teacher_checkpoint_is_named_without_suggesting_weights_only_false(tmp_path, damage):
    path = damage(_teacher_file(tmp_path))
    with pytest.raises(ValueError) as info:
        load_teacher(path)
    message = str(info.value)
    assert str(path) in message and "teacher checkpoint" in message and "corrupt, truncated" in message
    assert "weights_only` set to `False" not in message and "weights_only=False" not in message


@pytest.mark.parametrize("damage", [_random_bytes, _truncated])
def test_a_damaged_network_checkpoint_is_named(tmp_path, damage):
    network = build_network("small_cnn", 2, 1, 2)
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    damage(path)
    with pytest.raises(ValueError, match="corrupt, truncated") as info:
        load_checkpoint(network, path)
    assert str(path) in str(info.value) and "network weights" in str(info.value)


def test_a_checkpoint_of_another_network_is_an_error_below_the_minimum_share(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(build_network("resnet18", 2, 1, 2).state_dict(), path)
    network = build_network("small_cnn", 2, 1, 2)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError, match=r"matches only \d+% of the model's \d+ tensors") as info:
        load_checkpoint(network, path, strict=False, min_loaded_share=0.5)
    assert str(path) in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())  # nothing loaded
    # a head of another size is still a partial load above the share
    own = tmp_path / "three_classes.pt"
    torch.save(build_network("small_cnn", 2, 1, 3).state_dict(), own)
    report = load_checkpoint(network, own, strict=False, min_loaded_share=0.5)
    assert report.shape_mismatched_keys and len(report.loaded_keys) >= len(before) / 2


def test_teacher_bundle_refuses_a_foreign_init_checkpoint(tiny_datalist_2d, tmp_path):
    from pipeline.bundles import run_bundle

    path = tmp_path / "resnet18.pt"
    torch.save({"network": build_network("resnet18", 2, 1, 2).state_dict()}, path)
    settings = tiny_settings(tiny_datalist_2d, tmp_path / "runs", size=16, init_checkpoint=str(path))
    with pytest.raises(RuntimeError) as info:
        run_bundle("teacher", "train", settings=settings)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(path) in str(cause) and "at least 50%" in str(cause)
    assert not (tmp_path / "runs" / "teacher" / "models" / "model.pt").exists()


@pytest.mark.parametrize("workflow", ["evaluate", "inference"])
def test_evaluate_and_inference_name_a_damaged_checkpoint(tiny_datalist_2d, tmp_path, workflow):
    from pipeline.bundles import run_bundle

    path = tmp_path / "model.pt"
    torch.save(build_network("small_cnn", 2, 1, 2).state_dict(), path)
    _truncated(path)
    settings = tiny_settings(tiny_datalist_2d, tmp_path / "runs", size=16, checkpoint=str(path))
    with pytest.raises(RuntimeError) as info:
        run_bundle("baseline", workflow, settings=settings)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(path) in str(cause) and "corrupt, truncated" in str(cause)
    assert not (tmp_path / "runs" / "baseline" / "eval").exists()
