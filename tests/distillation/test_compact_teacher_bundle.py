"""The distillation bundle with another student network than the teacher's: stages paired by
resolution (`stage_pairs: auto`, the default), and `init_from_teacher` refused at start-up."""

from __future__ import annotations

import pytest
import torch

from pipeline.bundles import run_bundle
from pipeline.distillation.teacher import TeacherSpec, save_teacher


@pytest.fixture()
def settings(tiny_datalist_2d, tmp_path):
    """A saved (untrained) small_cnn teacher and a resnet18 student for a 1-epoch run on 32x32 images."""
    torch.manual_seed(0)
    spec = TeacherSpec("small_cnn", 2, 1, 2, ["stage1", "stage2", "stage3", "stage4"])
    teacher = save_teacher(tmp_path / "teacher.pt", spec.build_network(), spec.build_probes(), spec)
    return {
        "datalist": str(tiny_datalist_2d), "output_root": str(tmp_path), "teacher_checkpoint": str(teacher),
        "image_size": [32, 32], "max_epochs": 1, "batch_size": 16, "progress_bar": False, "tensorboard": False,
        "network_name": "resnet18", "init_from_teacher": False,
    }  # fmt: skip


def test_resnet18_student_learns_from_a_small_cnn_teacher_with_stages_paired_by_resolution(
    settings, tmp_path
):
    run_bundle("distillation", "train", settings=settings, log_config=False)
    models = tmp_path / "distillation" / "models"
    assert (models / "model.pt").is_file()
    objective = torch.load(models / "checkpoint_final.pt", weights_only=True)["distillation"]
    # the student's probes: one per paired student stage, sized for resnet18's channels
    prefix = "stage_loss.student_probes.probes."
    probes = {k[len(prefix):].split(".")[0]: v.shape[1] for k, v in objective.items()
              if k.startswith(prefix) and k.endswith("linear.weight")}  # fmt: skip
    assert probes == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def test_init_from_teacher_with_another_network_fails_at_start_up(settings, tmp_path):
    with pytest.raises(RuntimeError) as info:
        run_bundle(
            "distillation", "train", settings={**settings, "init_from_teacher": True}, log_config=False
        )
    message = str(info.value.__cause__ or info.value)
    assert "init_from_teacher" in message and "resnet18" in message and "small_cnn" in message
    assert not (tmp_path / "distillation" / "models").exists()
