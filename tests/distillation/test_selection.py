"""Selecting the student's checkpoint by agreement with the teacher, and starting it from the teacher."""

from __future__ import annotations

import pytest
import torch

from pipeline.distillation.builder import check_start_from_teacher, start_from_teacher
from pipeline.distillation.selection import TeacherAgreement, selection_metrics
from pipeline.distillation.teacher import Teacher, TeacherSpec
from pipeline.networks import build_network


def _agreement(teacher, student, images, from_logits):
    metric = TeacherAgreement(teacher, from_logits=from_logits)
    metric.reset()
    with torch.no_grad():
        logits = student(images)
    pred = logits if from_logits else logits.softmax(1)
    for chunk in range(0, len(images), 4):  # batches accumulate
        metric.update((images[chunk : chunk + 4], pred[chunk : chunk + 4]))
    return metric.compute()


def test_agreement_is_zero_for_the_teacher_and_lower_for_another_network():
    torch.manual_seed(0)
    teacher, other = build_network("small_cnn").eval(), build_network("small_cnn").eval()
    images = torch.rand(10, 1, 16, 16)
    assert _agreement(teacher, teacher, images, from_logits=True) == pytest.approx(0.0, abs=1e-6)
    far = _agreement(teacher, other, images, from_logits=True)
    assert far < 0
    assert _agreement(teacher, other, images, from_logits=False) == pytest.approx(far, rel=1e-4)


def test_agreement_reads_decollated_evaluator_output():
    torch.manual_seed(0)
    teacher = build_network("small_cnn").eval()
    images = torch.rand(3, 1, 16, 16)
    probs = teacher(images).softmax(1).detach()
    metric = TeacherAgreement(teacher)
    metric.reset()
    metric.update(metric._output_transform([{"image": i, "pred": p} for i, p in zip(images, probs)]))
    assert metric.compute() == pytest.approx(0.0, abs=1e-6)


def test_final_selection_scores_the_validated_epoch():
    from types import SimpleNamespace

    key, extra = selection_metrics("final", build_network("small_cnn"))
    ((name, metric),) = key.items()
    assert name == "val_epoch" and list(extra) == ["val_auc"]
    for epoch in (3, 4):  # e.g. resumed after epoch 2: the score is the trainer's epoch, not a count
        engine = SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={}))
        metric.reset()
        metric.completed(engine, name)
        assert engine.state.metrics[name] == epoch


def test_selection_names():
    teacher = build_network("small_cnn")
    key, extra = selection_metrics("teacher_agreement", teacher)
    assert list(key) == ["val_agreement"] and list(extra) == ["val_auc"]
    key, extra = selection_metrics("val_auc", teacher)
    assert list(key) == ["val_auc"] and extra == {}
    with pytest.raises(ValueError, match="final_epoch"):
        selection_metrics("final_epoch", teacher)


def _teacher(name="small_cnn", **options):
    spec = TeacherSpec(network_name=name, spatial_dims=2, in_channels=1, num_classes=2, stages=["stage1"],
                       network_options=options)  # fmt: skip
    return Teacher(network=spec.build_network(), probes=spec.build_probes(), spec=spec)


def test_student_starts_from_the_teachers_weights():
    torch.manual_seed(1)
    teacher = _teacher()
    student = build_network("small_cnn")
    start_from_teacher(student, teacher, "small_cnn", {})
    for key, value in teacher.network.state_dict().items():
        assert torch.equal(student.state_dict()[key], value)


def test_starting_from_a_teacher_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        start_from_teacher(build_network("resnet18"), _teacher(), "resnet18", {})


def test_starting_from_a_teacher_with_other_options_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"init_from_teacher: false") as info:
        check_start_from_teacher(_teacher(), "small_cnn", {"channels": [8, 16, 32, 64]})
    assert "[8, 16, 32, 64]" in str(info.value)
    check_start_from_teacher(_teacher(channels=[8, 16]), "small_cnn", {"channels": [8, 16]})
