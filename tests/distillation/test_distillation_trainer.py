"""DistillationTrainer: frozen teacher, hook hygiene, start-up checks, cached teacher targets."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader

from pipeline.distillation.losses import DistillationObjective, ProbeKLStageLoss
from pipeline.distillation.trainer import LOSS_TERMS, DistillationTrainer
from pipeline.networks import build_network
from pipeline.networks.probes import StageProbes

PAIRS = [["stage1", "stage1"], ["stage3", "stage3"]]


def _items(n=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(1, 16, 16, generator=generator),
            "label": i % 2,
            "id": f"s{i}",
            "bias": (i // 2) % 2,
        }
        for i in range(n)
    ]


def _trainer(
    teacher=None,
    teacher_probes=None,
    cache=False,
    epochs=2,
    seed=0,
    loader_seed=0,
    probe_fit="kl",
    script=True,
    device="cpu",
    **options,
):
    torch.manual_seed(seed)
    student = build_network("small_cnn").to(device)
    teacher = teacher or build_network("small_cnn")
    teacher_probes = teacher_probes or StageProbes.from_network("small_cnn", stages=["stage1", "stage3"])
    student_probes = StageProbes.from_network("small_cnn", stages=["stage1", "stage3"])
    stage_loss = ProbeKLStageLoss(PAIRS, student_probes, teacher_probes, probe_fit=probe_fit)
    objective = DistillationObjective(stage_loss, 1.0, 1.0, 2.0)
    parameters = list(student.parameters()) + [p for p in objective.parameters() if p.requires_grad]
    loader = DataLoader(
        _items(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(loader_seed)
    )
    return DistillationTrainer(
        device=torch.device(device),
        max_epochs=epochs,
        train_data_loader=loader,
        network=student,
        optimizer=torch.optim.Adam(parameters, lr=1e-2),
        loss_function=torch.nn.CrossEntropyLoss(),
        teacher=teacher,
        distillation=objective,
        cache_teacher_targets=cache,
        script_teacher=script,
        **options,
    )


def _hook_count(*models):
    return sum(len(m._forward_hooks) for model in models for m in model.modules())


def test_teacher_is_untouched_and_student_learns():
    teacher = build_network("small_cnn")
    teacher.train()  # the trainer must put it in eval mode itself
    before = copy.deepcopy(teacher.state_dict())
    trainer = _trainer(teacher=teacher)
    student_before = copy.deepcopy(trainer.network.state_dict())
    trainer.run()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm buffers
    assert all(p.grad is None for p in teacher.parameters())
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())
    changed = [k for k, v in trainer.network.state_dict().items() if not torch.equal(v, student_before[k])]
    assert changed


@pytest.mark.parametrize("probe_fit", ["kl", "labels"])
def test_every_loss_term_is_logged_each_iteration(probe_fit):
    trainer = _trainer(epochs=1, probe_fit=probe_fit)
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output[LOSS_TERMS]))
    )
    trainer.run()
    assert len(seen) == trainer.state.iteration == 3
    probe_terms = {"probe_stage1", "probe_stage3"} if probe_fit == "labels" else set()
    for terms in seen:
        assert set(terms) == {"ce", "kd_stage1", "kd_stage3", "kd_logits", "total"} | probe_terms
        parts = sum(v for k, v in terms.items() if k != "total")
        assert terms["total"].item() == pytest.approx(parts.item(), rel=1e-5)


@pytest.mark.parametrize("task_weight, ramp", [(0.0, 0), (2.0, 0), (1.0, 2)])
def test_task_loss_is_weighted_and_ramped_per_epoch(task_weight, ramp):
    trainer = _trainer(epochs=3, task_weight=task_weight, task_ramp_epochs=ramp)
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.state.epoch, dict(e.state.output[LOSS_TERMS])))
    )
    trainer.run()
    expected_weight = {1: task_weight * (0.0 if ramp else 1.0), 2: task_weight * (0.5 if ramp else 1.0), 3: task_weight}
    for epoch, terms in seen:
        assert trainer.task_weight_at(epoch) == pytest.approx(expected_weight[epoch])
        kd = sum(v for k, v in terms.items() if k.startswith("kd_"))
        expected = (expected_weight[epoch] * terms["ce"] + kd).item()
        assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_negative_task_weight_is_refused():
    with pytest.raises(ValueError, match="task_weight"):
        _trainer(task_weight=-1.0)


def test_hooks_are_removed_after_training_and_after_a_failed_step():
    trainer = _trainer(epochs=1)
    trainer.run()
    assert _hook_count(trainer.network, trainer.teacher) == 0

    failing = _trainer(epochs=1)

    def fail(engine):
        raise RuntimeError("boom")

    failing.add_event_handler(Events.ITERATION_COMPLETED(once=2), fail)
    with pytest.raises(RuntimeError, match="boom"):
        failing.run()
    assert _hook_count(failing.network, failing.teacher) == 0


def test_probe_channel_mismatch_fails_before_training():
    wrong = StageProbes({"stage1": 8, "stage3": 64}, 2, 2)  # stage1 of small_cnn has 16 channels
    trainer = _trainer(teacher_probes=wrong)
    with pytest.raises(ValueError, match="stage1"):
        trainer.run()
    assert trainer.state.iteration == 0
    assert _hook_count(trainer.network, trainer.teacher) == 0


def test_unknown_stage_and_missing_optimizer_parameters_fail_at_construction():
    student, teacher = build_network("small_cnn"), build_network("small_cnn")
    probes = StageProbes({"stage9": 16}, 2, 2)
    objective = DistillationObjective(ProbeKLStageLoss([["stage9", "stage9"]], probes, copy.deepcopy(probes)))
    kwargs = dict(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(_items(), batch_size=8)
    )
    with pytest.raises(ValueError, match="stage9"):
        DistillationTrainer(**kwargs, network=student, optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
                            loss_function=torch.nn.CrossEntropyLoss(), teacher=teacher, distillation=objective)  # fmt: skip
    good = DistillationObjective(
        ProbeKLStageLoss(PAIRS, StageProbes.from_network("small_cnn", ["stage1", "stage3"]),
                         StageProbes.from_network("small_cnn", ["stage1", "stage3"]))
    )  # fmt: skip
    with pytest.raises(ValueError, match="optimizer"):
        DistillationTrainer(**kwargs, network=student, optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
                            loss_function=torch.nn.CrossEntropyLoss(), teacher=teacher, distillation=good)  # fmt: skip


def _losses_per_iteration(trainer, flag=lambda engine: None):
    """Run ``trainer``; the loss of every iteration and ``flag(engine)`` at every iteration."""
    losses, flags = [], []

    def record(engine):
        losses.append(engine.state.output["loss"].item())
        flags.append(flag(engine))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    return losses, flags


def test_cached_and_live_teacher_targets_give_the_same_losses():
    teacher = build_network("small_cnn")
    probes = StageProbes.from_network("small_cnn", stages=["stage1", "stage3"])
    runs = {}
    for cache in (False, True):
        trainer = _trainer(
            teacher=copy.deepcopy(teacher), teacher_probes=copy.deepcopy(probes), cache=cache, epochs=3
        )
        runs[cache] = (_losses_per_iteration(trainer)[0], trainer)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5, abs=1e-6)
    cache = runs[True][1].target_cache
    assert (
        len(cache) == 24 and cache.hits == 6 and cache.misses == 3
    )  # epochs 2-3 read every batch from the cache
    cached = dict(cache.items())
    assert len(cached) == 24 and all(t["logits"].device.type == "cpu" for t in cached.values())


def test_scripted_and_eager_teacher_give_the_same_losses():
    teacher = build_network("small_cnn")
    probes = StageProbes.from_network("small_cnn", stages=["stage1", "stage3"])
    runs = {}
    for script in (False, True):
        trainer = _trainer(
            teacher=copy.deepcopy(teacher), teacher_probes=copy.deepcopy(probes), script=script
        )
        losses, scripted = _losses_per_iteration(trainer, lambda engine: engine._teacher_script is not None)
        runs[script] = losses
        assert set(scripted) == {script} and trainer._teacher_script is None  # released after the run
    assert runs[True] == pytest.approx(runs[False], rel=1e-4, abs=1e-5)


def test_negative_ramp_is_refused_and_the_ramp_reaches_the_task_weight():
    with pytest.raises(ValueError, match="task_ramp_epochs"):
        _trainer(task_ramp_epochs=-1)
    trainer = _trainer(task_weight=3.0, task_ramp_epochs=4)
    assert [trainer.task_weight_at(e) for e in (1, 2, 3, 5, 9)] == pytest.approx([0.0, 0.75, 1.5, 3.0, 3.0])


def test_cache_keys_pair_each_id_with_its_artifact_flag():
    trainer = _trainer(cache=True)
    keys = trainer._cache_keys({"id": ["a", "b"], "bias": torch.tensor([[1], [0]])})
    assert keys == [("a", 1), ("b", 0)]
    assert trainer._cache_keys({"id": ["a", 7]}) == [("a", 0), ("7", 0)]  # no flag: 0
    with pytest.raises(ValueError, match=r"cache_teacher_targets needs 'id' in the batch; keys: \['bias', 'image'\]"):
        trainer._cache_keys({"image": 0, "bias": 1})


def test_loss_terms_are_logged_as_floats():
    from pipeline.distillation.trainer import loss_terms

    logged = loss_terms({LOSS_TERMS: {"ce": torch.tensor(0.5), "kd_logits": torch.tensor(2.0)}, "loss": 1})
    assert logged == {"ce": 0.5, "kd_logits": 2.0} and all(type(v) is float for v in logged.values())


def test_probe_gradients_are_averaged_over_processes_under_ddp(monkeypatch):
    trainer = _trainer()
    parameters = [p for p in trainer.distillation.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.grad = torch.full_like(parameter, 3.0)
    parameters[0].grad = None  # a parameter without a gradient is left alone
    # a second process whose gradients are all 1: the average is 2
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor: tensor.add_(1.0))
    trainer._average_distillation_gradients(trainer)
    assert parameters[0].grad is None
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in parameters[1:])
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 1)  # one process: nothing to average
    trainer._average_distillation_gradients(trainer)
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in parameters[1:])


def test_the_teacher_is_scripted_only_on_the_cpu_without_the_cache():
    images = torch.rand(2, 1, 16, 16)
    assert _trainer()._scripts_teacher(images)
    assert not _trainer(script=False)._scripts_teacher(images)
    assert not _trainer(cache=True)._scripts_teacher(images)
    assert not _trainer()._scripts_teacher(None)
    assert not _trainer()._scripts_teacher(images.to("meta"))
