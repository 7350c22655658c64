"""DistillationTrainer's gradients against a step recomputed outside the trainer.

Each iteration's gradients (taken before the optimizer's step) must equal those of
``w_task(epoch) * CE + sum(distillation terms)`` recomputed on the same batch from a fresh copy
of the student and of its trainable probes/adapters; the teacher and its probes get none.
"""

from __future__ import annotations

import copy

import pytest
import torch
from monai.data import DataLoader
from monai.engines.utils import IterationEvents

from pipeline.distillation.losses import (
    AttentionTransferStageLoss,
    DistillationObjective,
    FeatureMSEStageLoss,
    ProbeKLStageLoss,
)
from pipeline.distillation.trainer import DistillationTrainer
from pipeline.networks import build_network, network_stages
from pipeline.networks.hooks import FeatureHooks
from pipeline.networks.probes import StageProbes

PAIRS = [["stage1", "stage1"], ["stage3", "stage2"]]
STAGE_WEIGHTS = [0.7, 1.9]
LOGIT_WEIGHT, TEMPERATURE = 0.6, 3.0


def _items(n=16):
    generator = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(1, 16, 16, generator=generator), "label": i % 2, "id": f"s{i}", "bias": i % 3 == 0}
        for i in range(n)
    ]


def _objective(kind, probe_fit="kl"):
    channels = network_stages("small_cnn")
    if kind == "probe_kl":
        stage = ProbeKLStageLoss(
            PAIRS,
            StageProbes.from_network("small_cnn", stages=["stage1", "stage3"]),
            StageProbes.from_network("small_cnn", stages=["stage1", "stage2"]),
            temperature=1.5,
            probe_fit=probe_fit,
        )
    elif kind == "feature_mse":
        stage = FeatureMSEStageLoss(PAIRS, channels, channels)
    else:
        stage = AttentionTransferStageLoss(PAIRS, p=3.0)
    return DistillationObjective(stage, STAGE_WEIGHTS, LOGIT_WEIGHT, TEMPERATURE)


def _run(kind, epochs=1, probe_fit="kl", **options):
    """Train briefly; per iteration: epoch, batch, the weights before the step, and the gradients."""
    torch.manual_seed(0)
    teacher, student = build_network("small_cnn").eval(), build_network("small_cnn")
    objective = _objective(kind, probe_fit)
    teacher_before = copy.deepcopy(teacher.state_dict())
    trainable = [p for p in objective.parameters() if p.requires_grad]
    trainer = DistillationTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=DataLoader(_items(), batch_size=8, shuffle=False),
        network=student,
        optimizer=torch.optim.SGD(list(student.parameters()) + trainable, lr=0.05),
        loss_function=torch.nn.CrossEntropyLoss(),
        teacher=teacher,
        distillation=objective,
        script_teacher=False,
        **options,
    )
    steps = []

    def record(engine):
        steps.append(
            {
                "epoch": engine.state.epoch,
                "batch": {k: v for k, v in engine.state.batch.items()},
                "student": copy.deepcopy(engine.network.state_dict()),
                "objective": copy.deepcopy(objective.state_dict()),
                "grads": {n: _grad(p) for n, p in engine.network.named_parameters()},
                "objective_grads": {n: _grad(p) for n, p in objective.named_parameters()},
            }
        )

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, record)
    trainer.run()
    return trainer, teacher, teacher_before, steps


def _grad(parameter):
    return None if parameter.grad is None else parameter.grad.detach().clone()


def _expected_grads(kind, step, teacher, task_weight, probe_fit="kl"):
    """Gradients of task_weight * CE + sum of the terms, recomputed for one recorded step."""
    student = build_network("small_cnn")
    student.load_state_dict(step["student"])
    student.train()
    objective = _objective(kind, probe_fit)
    objective.load_state_dict(step["objective"])
    images, labels = step["batch"]["image"], step["batch"]["label"]
    with torch.no_grad(), FeatureHooks(teacher, objective.teacher_stages) as hooks:
        teacher_logits = teacher(images)
        targets = objective.teacher_targets(dict(hooks.features), teacher_logits)
    with FeatureHooks(student, objective.student_stages) as hooks:
        logits = student(images)
        terms = objective(dict(hooks.features), logits, targets, labels)
    loss = task_weight * torch.nn.functional.cross_entropy(logits, labels) + sum(terms.values())
    loss.backward()
    return (
        {n: _grad(p) for n, p in student.named_parameters()},
        {n: _grad(p) for n, p in objective.named_parameters()},
    )


def _assert_same(actual, expected, what):
    assert set(actual) == set(expected), what
    for name, grad in expected.items():
        if grad is None:
            assert actual[name] is None or actual[name].abs().max() == 0, f"{what}: {name} should get no gradient"
            continue
        assert actual[name] is not None, f"{what}: {name} got no gradient"
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-6, msg=f"{what}: {name}")


@pytest.mark.parametrize("kind", ["probe_kl", "feature_mse", "attention"])
def test_distillation_gradient_reaches_the_student_and_its_probes_or_adapters(kind):
    # task weight 0: the gradient is the distillation's alone
    trainer, teacher, _, steps = _run(kind, task_weight=0.0)
    assert len(steps) == 2
    for step in steps:
        expected, expected_objective = _expected_grads(kind, step, teacher, 0.0)
        assert any(g is not None and g.abs().max() > 0 for g in expected.values())
        _assert_same(step["grads"], expected, f"{kind} student")
        _assert_same(step["objective_grads"], expected_objective, f"{kind} probes/adapters")
    if kind == "probe_kl":  # the student's probes learn from the KL, the teacher's are frozen
        student_probe = steps[0]["objective_grads"]["stage_loss.student_probes.probes.stage3.linear.weight"]
        assert student_probe.abs().max() > 0
        assert all(g is None for n, g in steps[0]["objective_grads"].items() if "teacher_probes" in n)
    if kind == "feature_mse":
        assert steps[0]["objective_grads"]["stage_loss.adapters.1.weight"].abs().max() > 0


@pytest.mark.parametrize("probe_fit", ["kl", "labels"])
def test_gradient_is_task_plus_distillation_and_the_teacher_gets_none(probe_fit):
    trainer, teacher, teacher_before, steps = _run("probe_kl", probe_fit=probe_fit, task_weight=1.7)
    for step in steps:
        expected, expected_objective = _expected_grads("probe_kl", step, teacher, 1.7, probe_fit)
        _assert_same(step["grads"], expected, "student")
        _assert_same(step["objective_grads"], expected_objective, "probes")
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in trainer.teacher.parameters())
    assert all(p.grad is None for p in trainer.distillation.stage_loss.teacher_probes.parameters())


def test_cross_entropy_ramps_in_over_the_epochs():
    # weight 2 reached after 2 ramp epochs: 0 in epoch 1, 1 in epoch 2, 2 in epoch 3
    trainer, teacher, _, steps = _run("attention", epochs=3, task_weight=2.0, task_ramp_epochs=2)
    assert [s["epoch"] for s in steps] == [1, 1, 2, 2, 3, 3]
    for step in steps:
        weight = {1: 0.0, 2: 1.0, 3: 2.0}[step["epoch"]]
        expected, _ = _expected_grads("attention", step, teacher, weight)
        _assert_same(step["grads"], expected, f"epoch {step['epoch']}")
