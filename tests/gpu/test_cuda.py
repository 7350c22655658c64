"""CUDA checks (`make test-gpu`, `pytest -m gpu`): AMP training and evaluation, the teacher and the
distilled student on the GPU, DDP with nccl, and the Docker entry point's commands.

Each test skips with its reason where CUDA or enough GPUs are missing (tests/gpu/conftest.py), so
the run exits 0 there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.bundles import run_bundle
from pipeline.distillation.teacher import load_teacher
from pipeline.networks import build_network, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.py"
pytestmark = pytest.mark.gpu  # tests/gpu/conftest.py skips without CUDA; gpu(2): two GPUs


def _settings(datalist: Path, output_root: Path, **extra) -> dict:
    """A tiny run on the GPU with automatic mixed precision."""
    return {
        "datalist": str(datalist), "output_root": str(output_root), "image_size": [32, 32], "batch_size": 16,
        "max_epochs": 1, "progress_bar": False, "tensorboard": False, "amp": True, **extra,
    }  # fmt: skip


def _cli_settings(datalist: Path) -> list[str]:
    return ["--datalist", str(datalist), "--image_size", "[32,32]", "--batch_size", "4", "--max_epochs", "1",
            "--progress_bar", "False", "--tensorboard", "False", "--amp", "True"]  # fmt: skip


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _entrypoint(*args: str, outputs: Path | None = None) -> subprocess.CompletedProcess:
    """docker/entrypoint.py outside Docker, with ``SHORTCUT_KD_OUTPUTS`` when ``outputs`` is given."""
    env = {"SHORTCUT_KD_OUTPUTS": str(outputs)} if outputs is not None else {}
    return _run([sys.executable, str(ENTRYPOINT), *args], **env)


def _assert_trained_on_cuda(models: Path) -> None:
    """The final checkpoint holds CUDA tensors (saved from the GPU) and loads into a CPU network."""
    saved = torch.load(models / "checkpoint_final.pt", weights_only=True)["network"]
    assert {tensor.device.type for tensor in saved.values()} == {"cuda"}
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
    assert load_checkpoint(build_network("small_cnn", 2, 1, 2), models / "model.pt").complete


def _assert_evaluated(eval_dir: Path) -> None:
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    aucs = [metrics[test_set]["auc"] for test_set in ("in_distribution", "bias_free", "bias_inverted")]
    assert all(0.0 <= auc <= 1.0 for auc in aucs), aucs


def test_baseline_trains_with_amp_and_evaluates_on_cuda(tiny_datalist_2d, tmp_path):
    settings = _settings(tiny_datalist_2d, tmp_path)
    parsed = run_bundle("baseline", "train", settings=settings).parser.get_parsed_content
    trainer = parsed("train#trainer")
    assert trainer.amp and trainer.scaler is not None and trainer.state.device.type == "cuda"
    assert next(parsed("network").parameters()).device.type == "cuda"
    loss = trainer.state.output["loss"]
    assert loss.device.type == "cuda" and math.isfinite(loss.item())
    _assert_trained_on_cuda(tmp_path / "baseline" / "models")
    run_bundle("baseline", "evaluate", settings=settings)
    _assert_evaluated(tmp_path / "baseline" / "eval")


def test_teacher_and_distilled_student_both_run_on_cuda(tiny_datalist_2d, tmp_path):
    settings = _settings(tiny_datalist_2d, tmp_path)
    run_bundle("teacher", "train", settings={**settings, "probe_epochs": 1})
    load_teacher(tmp_path / "teacher" / "models" / "teacher.pt")  # raises unless a complete teacher was saved
    # two epochs: the second reads the teacher's targets from the (CPU) cache, moved to the GPU
    parsed = run_bundle(
        "distillation", "train", settings={**settings, "max_epochs": 2}
    ).parser.get_parsed_content
    trainer = parsed("train#trainer")
    assert trainer.amp and trainer.state.device.type == "cuda"
    assert {p.device.type for p in trainer.teacher.parameters()} == {"cuda"}
    assert {p.device.type for p in trainer.distillation.parameters()} <= {"cuda"}
    assert next(parsed("network").parameters()).device.type == "cuda"
    terms = trainer.state.output["loss_terms"]
    assert set(terms) - {"ce", "total"}, terms  # the distillation terms were computed
    assert all(math.isfinite(float(value)) for value in terms.values()), terms
    _assert_trained_on_cuda(tmp_path / "distillation" / "models")
    run_bundle("distillation", "evaluate", settings=settings)
    _assert_evaluated(tmp_path / "distillation" / "eval")


@pytest.mark.gpu(2)
def test_ddp_with_nccl_on_two_gpus(tiny_datalist_2d, tmp_path):
    done = _run([sys.executable, "-m", "pipeline.bundles", "baseline", "train", "--multi-gpu", "2",
                 "--dist_backend", "nccl", "--output_root", str(tmp_path),
                 *_cli_settings(tiny_datalist_2d)])  # fmt: skip
    assert "torch.distributed.run" in done.stdout
    _assert_trained_on_cuda(tmp_path / "baseline" / "models")


def test_entrypoint_bundle_and_experiment_commands_on_cuda(tiny_datalist_2d, tmp_path):
    outputs = tmp_path / "outputs"
    for workflow in ("train", "evaluate"):
        _entrypoint("bundle", "baseline", workflow, *_cli_settings(tiny_datalist_2d), outputs=outputs)
    _assert_trained_on_cuda(outputs / "baseline" / "models")
    _assert_evaluated(outputs / "baseline" / "eval")
    experiment = tmp_path / "experiment"
    done = _entrypoint("experiment", "--output", str(experiment), "--methods", "erm", "reference",
                       "--set", f"datalist={tiny_datalist_2d}", "--set", "image_size=[32, 32]",
                       "--set", "max_epochs=1", "--set", "amp=True")  # fmt: skip
    assert "AUC by test set, localized2d:" in done.stdout
    _assert_trained_on_cuda(experiment / "localized2d" / "erm" / "models")


@pytest.mark.gpu(2)
def test_entrypoint_multi_gpu_command_on_two_gpus(tiny_datalist_2d, tmp_path):
    outputs = tmp_path / "outputs"
    _entrypoint("multi-gpu", "baseline", "--nproc", "2", *_cli_settings(tiny_datalist_2d), outputs=outputs)
    _assert_trained_on_cuda(outputs / "baseline" / "models")
