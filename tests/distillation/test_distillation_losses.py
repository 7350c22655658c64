"""Distillation terms: zero between identical networks, positive otherwise, validated inputs."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.distillation.losses import (
    AttentionTransferStageLoss,
    DistillationObjective,
    FeatureMSEStageLoss,
    ProbeKLStageLoss,
    kl_divergence,
)
from pipeline.networks import build_network, network_stages
from pipeline.networks.hooks import FeatureHooks
from pipeline.networks.probes import StageProbes

STAGES = ["stage1", "stage2", "stage3", "stage4"]
PAIRS = [[s, s] for s in STAGES]


def _features(model, images):
    with FeatureHooks(model, STAGES) as hooks:
        logits = model(images)
        return dict(hooks.features), logits


def _objective(kind, teacher_probes, student_probes):
    channels = network_stages("small_cnn")
    if kind == "probe_kl":
        stage = ProbeKLStageLoss(PAIRS, student_probes, teacher_probes, temperature=2.0)
    elif kind == "feature_mse":
        stage = FeatureMSEStageLoss(PAIRS, channels, channels)
        for adapter in stage.adapters:  # identity 1x1 convolutions
            torch.nn.init.zeros_(adapter.bias)
            adapter.weight.data = torch.eye(adapter.weight.shape[0]).reshape(adapter.weight.shape)
    else:
        stage = AttentionTransferStageLoss(PAIRS)
    return DistillationObjective(stage, stage_weights=[1, 2, 3, 4], logit_weight=1.0, temperature=2.0)


@pytest.mark.parametrize("kind", ["probe_kl", "feature_mse", "attention"])
def test_every_term_is_zero_when_the_student_is_a_copy_of_the_teacher(kind):
    torch.manual_seed(0)
    teacher = build_network("small_cnn").eval()
    probes = StageProbes.from_network("small_cnn")
    student, student_probes = copy.deepcopy(teacher), copy.deepcopy(probes)
    objective = _objective(kind, probes, student_probes)
    images = torch.rand(4, 1, 32, 32)
    t_features, t_logits = _features(teacher, images)
    s_features, s_logits = _features(student, images)
    terms = objective(s_features, s_logits, objective.teacher_targets(t_features, t_logits))
    assert set(terms) == {"kd_stage1", "kd_stage2", "kd_stage3", "kd_stage4", "kd_logits"}
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("kind", ["probe_kl", "feature_mse", "attention"])
def test_terms_are_positive_and_weighted_for_a_different_student(kind):
    torch.manual_seed(0)
    teacher, student = build_network("small_cnn").eval(), build_network("small_cnn").eval()
    probes, student_probes = StageProbes.from_network("small_cnn"), StageProbes.from_network("small_cnn")
    objective = _objective(kind, probes, student_probes)
    images = torch.rand(4, 1, 32, 32)
    t_features, t_logits = _features(teacher, images)
    s_features, s_logits = _features(student, images)
    targets = objective.teacher_targets(t_features, t_logits)
    terms = objective(s_features, s_logits, targets)
    assert all(v.item() > 0 for v in terms.values())
    raw = objective.stage_loss(s_features, targets)
    assert terms["kd_stage3"].item() == pytest.approx(3 * raw["stage3"].item(), rel=1e-5)


def test_kl_is_per_sample_mean_times_t_squared():
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = 3.0
    p_t = torch.softmax(teacher / t, 1)
    expected = (p_t * (p_t.log() - torch.log_softmax(student / t, 1))).sum(1).mean() * t * t
    assert kl_divergence(student, teacher, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_stage_weights_must_match_the_pairs():
    stage = AttentionTransferStageLoss(PAIRS)
    with pytest.raises(ValueError, match="stage_weights"):
        DistillationObjective(stage, stage_weights=[1.0, 2.0])


def test_teacher_of_another_width_is_supported_by_feature_mse():
    student_channels = network_stages("small_cnn")
    teacher_channels = network_stages("small_cnn", channels=[8, 8, 16, 16])
    stage = FeatureMSEStageLoss([["stage2", "stage4"]], student_channels, teacher_channels)
    student, teacher = build_network("small_cnn"), build_network("small_cnn", channels=[8, 8, 16, 16])
    images = torch.rand(2, 1, 32, 32)
    with FeatureHooks(student, ["stage2"]) as s_hooks, FeatureHooks(teacher, ["stage4"]) as t_hooks:
        student(images), teacher(images)
        loss = stage(s_hooks.features, stage.teacher_targets(t_hooks.features))
    assert loss["stage2<-stage4"].item() > 0


def test_partial_layer_distillation_uses_only_the_paired_stages_of_a_fully_probed_teacher():
    torch.manual_seed(0)
    teacher, student = build_network("small_cnn").eval(), build_network("small_cnn").eval()
    teacher_probes = StageProbes.from_network("small_cnn")  # all four stages, as the teacher bundle fits
    pairs = [["stage2", "stage2"], ["stage4", "stage4"]]
    stage = ProbeKLStageLoss(
        pairs, StageProbes.from_network("small_cnn", ["stage2", "stage4"]), teacher_probes
    )
    images = torch.rand(2, 1, 32, 32)
    with (
        FeatureHooks(teacher, ["stage2", "stage4"]) as t_hooks,
        FeatureHooks(student, ["stage2", "stage4"]) as s_hooks,
    ):
        teacher(images), student(images)
        losses = stage(s_hooks.features, stage.teacher_targets(t_hooks.features))
    assert set(losses) == {"stage2", "stage4"}


def test_teacher_probe_mode_reads_the_student_through_frozen_teacher_probes():
    from pipeline.distillation.builder import build_distillation
    from pipeline.distillation.teacher import Teacher, TeacherSpec

    torch.manual_seed(0)
    spec = TeacherSpec("small_cnn", 2, 1, 2, STAGES)
    teacher = Teacher(build_network("small_cnn").eval(), spec.build_probes(), spec)
    objective = build_distillation("probe_kl", PAIRS, teacher, "small_cnn", student_probes="teacher")
    assert not [p for p in objective.parameters() if p.requires_grad]  # nothing to train but the student
    student = copy.deepcopy(teacher.network)
    images = torch.rand(2, 1, 32, 32)
    t_features, t_logits = _features(teacher.network, images)
    s_features, s_logits = _features(student, images)
    terms = objective(s_features, s_logits, objective.teacher_targets(t_features, t_logits))
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in terms.values())
    with pytest.raises(ValueError, match="same stage"):
        build_distillation("probe_kl", [["stage1", "stage2"]], teacher, "small_cnn", student_probes="teacher")


def test_label_fitted_probes_learn_from_labels_only_and_the_kl_moves_only_the_student():
    from pipeline.distillation.builder import build_distillation
    from pipeline.distillation.teacher import Teacher, TeacherSpec

    torch.manual_seed(0)
    spec = TeacherSpec("small_cnn", 2, 1, 2, STAGES)
    teacher = Teacher(build_network("small_cnn").eval(), spec.build_probes(), spec)
    objective = build_distillation(
        "probe_kl", PAIRS, teacher, "small_cnn", stage_weights=1.0, logit_weight=0.0, student_probes="labels"
    )
    student = build_network("small_cnn")
    images, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    t_features, t_logits = _features(teacher.network, images)
    s_features, s_logits = _features(student, images)
    targets = objective.teacher_targets(t_features, t_logits)
    terms = objective(s_features, s_logits, targets, labels)
    assert set(terms) == {f"kd_{s}" for s in STAGES} | {f"probe_{s}" for s in STAGES}
    probe_params = list(objective.stage_loss.student_probes.parameters())
    kl = sum(v for k, v in terms.items() if k.startswith("kd_"))
    ce = sum(v for k, v in terms.items() if k.startswith("probe_"))
    # the KL reaches the student's features but not its probes
    assert all(g is None for g in torch.autograd.grad(kl, probe_params, retain_graph=True, allow_unused=True))
    assert torch.autograd.grad(kl, s_features["stage2"], retain_graph=True)[0].abs().sum() > 0
    # the probes' cross-entropy reaches the probes but not the student's features
    assert all(
        g is not None and g.abs().sum() > 0 for g in torch.autograd.grad(ce, probe_params, retain_graph=True)
    )
    assert torch.autograd.grad(ce, s_features["stage2"], allow_unused=True)[0] is None
    with pytest.raises(ValueError, match="labels"):
        objective(s_features, s_logits, targets)
