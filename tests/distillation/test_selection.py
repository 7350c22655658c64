"""Selecting the student's checkpoint by agreement with the teacher, and starting it from the teacher."""

from __future__ import annotations

import math

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


class _Fixed(torch.nn.Module):
    """A 'teacher' that returns fixed logits per image (its first pixel picks the row), with a
    batch norm that changes its output in training mode."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))
        self.norm = torch.nn.BatchNorm1d(2)

    def forward(self, images):
        return self.norm(self.logits[images.flatten(1)[:, 0].long()])


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_agreement_is_minus_the_mean_kl_from_teacher_to_student_over_every_batch():
    teacher = _Fixed(
        [[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]]
    )  # (1/2, 1/2), (3/4, 1/4), (1/5, 4/5)
    teacher.train()  # the metric puts it in eval mode (batch norm with its running statistics: identity here)
    images = torch.tensor([0.0, 1.0, 2.0]).reshape(3, 1, 1, 1)
    student = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.4, 0.6]])
    metric = TeacherAgreement(teacher)
    metric.reset()
    metric.update((images[:2], student[:2]))
    metric.update((images[2:], student[2:]))
    teacher_p = [(0.5, 0.5), (0.75, 0.25), (0.2, 0.8)]
    expected = -sum(_kl(p, q) for p, q in zip(teacher_p, student.tolist())) / 3
    assert metric.compute() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(
        -sum(_kl(q, p) for p, q in zip(teacher_p, student.tolist())) / 3, rel=1e-3
    )
    assert not teacher.training


def test_agreement_from_logits_and_a_zero_probability():
    teacher = _Fixed([[0.0, 0.0]])
    images = torch.zeros(1, 1, 1, 1)
    metric = TeacherAgreement(teacher, from_logits=True)
    metric.reset()
    metric.update((images, torch.tensor([[math.log(9.0), 0.0]])))  # student (0.9, 0.1)
    assert metric.compute() == pytest.approx(-_kl((0.5, 0.5), (0.9, 0.1)), rel=1e-5)
    metric = TeacherAgreement(teacher)
    metric.reset()
    metric.update((images, torch.tensor([[1.0, 0.0]])))  # log(0) read as log(1e-12)
    assert metric.compute() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-12)), rel=1e-5)


def test_agreement_without_images_is_an_error():
    metric = TeacherAgreement(_Fixed([[0.0, 0.0]]))
    metric.reset()
    with pytest.raises(ValueError, match=r"^TeacherAgreement needs at least one evaluated image$"):
        metric.compute()


def test_the_validation_auc_reads_pred_and_label_and_a_missing_teacher_is_named():
    from monai.data import decollate_batch

    _, extra = selection_metrics("final", None)
    auc = extra["val_auc"]
    auc.reset()
    pred = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.65, 0.35]])
    batch = {"pred": pred, "label": torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])}  # 3 of 4 pairs ordered
    auc.update(auc._output_transform(decollate_batch(batch)))
    assert auc.compute() == pytest.approx(0.75)
    message = ("selection 'teacher_agreement' needs a teacher to agree with; the teacher bundle's "
               "teacher_selection takes 'final' or 'val_auc'")  # fmt: skip
    with pytest.raises(ValueError) as error:
        selection_metrics("teacher_agreement", None)
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        selection_metrics("best", None)
    assert (
        str(error.value)
        == "selection 'best' is unknown; choose one of ['final', 'teacher_agreement', 'val_auc']"
    )


def test_the_validation_epoch_is_zero_before_any_validation():
    from pipeline.distillation.selection import ValidationEpoch

    assert ValidationEpoch().compute() == 0.0


def test_agreement_reads_a_batched_evaluator_output_and_the_selection_s_metric_uses_the_teacher():
    teacher = _Fixed([[0.0, 0.0], [math.log(3.0), 0.0]])
    images = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    student = torch.tensor([[0.9, 0.1], [0.75, 0.25]])
    key, _ = selection_metrics("teacher_agreement", teacher)
    metric = key["val_agreement"]
    metric.reset()
    metric.update(metric._output_transform({"image": images, "pred": student}))
    assert metric.compute() == pytest.approx(-_kl((0.5, 0.5), (0.9, 0.1)) / 2, rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_teacher_runs_on_the_device_given_to_the_selection():
    teacher = _Fixed([[0.0, 0.0]]).cuda()
    key, _ = selection_metrics("teacher_agreement", teacher, device="cuda")
    metric = key["val_agreement"]
    metric.reset()
    metric.update((torch.zeros(1, 1, 1, 1), torch.tensor([[0.5, 0.5]])))  # images and predictions on the CPU
    assert metric.compute() == pytest.approx(0.0, abs=1e-6)
