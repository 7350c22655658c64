"""The trainer's details that its mutants showed untested: its defaults and positional arguments,
how the start-up check prepares its batch, the cached teacher's state at every iteration and its
one warning in full, CUDA's cache emptied only on CUDA, glibc's heap trimmed, a one-epoch ramp,
and the optimizer message in full."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines.utils import default_prepare_batch

import pipeline.distillation.trainer as trainer_module
from pipeline.distillation.losses import DistillationObjective, ProbeKLStageLoss
from pipeline.distillation.trainer import DistillationTrainer
from pipeline.networks import build_network
from pipeline.networks.probes import StageProbes
from tests.distillation.test_distillation_trainer import _items, _trainer

RELOAD_WARNING = (
    "a batch missed the teacher-target cache after an epoch had filled it (new sample ids or artifact "
    "states): the teacher runs again on cpu"
)


def _objective(stages=("stage1", "stage3")):
    pairs = [[s, s] for s in stages]
    student_probes = StageProbes.from_network("small_cnn", stages=list(stages))
    teacher_probes = StageProbes.from_network("small_cnn", stages=list(stages))
    return DistillationObjective(ProbeKLStageLoss(pairs, student_probes, teacher_probes))


def test_positional_arguments_reach_the_supervised_trainer_and_the_defaults():
    torch.manual_seed(0)
    student, loss = build_network("small_cnn"), torch.nn.CrossEntropyLoss()
    objective = _objective()
    optimizer = torch.optim.SGD(
        list(student.parameters()) + list(objective.stage_loss.student_probes.parameters()), lr=0.1
    )
    loader = DataLoader(_items(8), batch_size=4)
    trainer = DistillationTrainer(
        torch.device("cpu"),
        3,
        loader,
        student,
        optimizer,
        loss,
        teacher=build_network("small_cnn"),
        distillation=objective,
    )
    assert trainer.state.max_epochs == 3 and trainer.data_loader is loader
    assert trainer.network is student and trainer.optimizer is optimizer and trainer.task_loss is loss
    # defaults: no cache, a scripted teacher, the task loss at full weight without a ramp, nothing offloaded
    assert trainer.target_cache is None and trainer.script_teacher is True
    assert (trainer.task_weight, trainer.task_ramp_epochs) == (1.0, 0)
    assert trainer.teacher_offloaded is False


def test_a_one_epoch_ramp_starts_the_task_loss_at_zero():
    trainer = _trainer(task_weight=2.0, task_ramp_epochs=1)
    assert [trainer.task_weight_at(epoch) for epoch in (1, 2, 3)] == [0.0, 2.0, 2.0]


def test_the_start_up_check_prepares_its_batch_as_the_iterations_do():
    calls = []

    def prepare(batchdata, device=None, non_blocking=False, **kwargs):
        calls.append((device, non_blocking, kwargs))
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return images, labels, (), {}  # MONAI's (inputs, targets, args, kwargs) form

    trainer = _trainer(epochs=1, prepare_batch=prepare, non_blocking=True, to_kwargs={"copy": True})
    trainer.run()
    # the start-up check, then the 3 iterations of the epoch
    assert calls == [(torch.device("cpu"), True, {"copy": True})] * 4


class _RenamedFromEpoch3(torch.utils.data.Dataset):
    """The trainer's items; from epoch 3 on, sample s0 has a new id in every epoch (a cache miss)."""

    def __init__(self, trainer):
        self.items, self.trainer = _items(), trainer

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item, epoch = self.items[index], self.trainer.state.epoch
        return dict(item, id=f"s0-e{epoch}") if item["id"] == "s0" and epoch >= 3 else item


def _offloaded_at_each_iteration(trainer):
    flags = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: flags.append(engine.teacher_offloaded)
    )
    return flags


def test_the_cached_teacher_state_at_every_iteration_and_one_warning_for_two_misses(caplog):
    trainer = _trainer(cache=True, epochs=4)
    trainer.data_loader = torch.utils.data.DataLoader(_RenamedFromEpoch3(trainer), batch_size=8)
    flags = _offloaded_at_each_iteration(trainer)
    with caplog.at_level(logging.WARNING, logger="pipeline.distillation.trainer"):
        trainer.run()
    # epoch 1 fills the cache; epoch 2 reads it with the teacher off; in epochs 3 and 4 the first
    # batch misses (s0 renamed), which brings the teacher back until the epoch's end
    assert flags == [False] * 3 + [True] * 3 + [False] * 3 + [False] * 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.distillation.trainer"]
    assert warnings == [RELOAD_WARNING]
    assert trainer.teacher_offloaded is True


def test_a_second_run_has_the_teacher_back_from_its_first_iteration():
    trainer = _trainer(cache=True, epochs=1)
    trainer.run()
    assert trainer.teacher_offloaded is True
    flags = _offloaded_at_each_iteration(trainer)
    trainer.state.max_epochs = 2
    trainer.run()
    assert flags == [False] * 3 and trainer.teacher_offloaded is True


@pytest.mark.parametrize("device, emptied", [("cpu", 0), ("cuda", 1)])
def test_the_offload_empties_cuda_s_cache_only_on_cuda_and_trims_the_heap_once(monkeypatch, device, emptied):
    calls = {"empty_cache": 0, "heap": 0}
    monkeypatch.setattr(
        torch.cuda, "empty_cache", lambda: calls.__setitem__("empty_cache", calls["empty_cache"] + 1)
    )
    monkeypatch.setattr(
        trainer_module, "_return_free_heap", lambda: calls.__setitem__("heap", calls["heap"] + 1)
    )
    trainer = _trainer(cache=True)
    trainer.state.device = torch.device(device)  # only its type is read: the teacher goes to the CPU
    trainer._offload_teacher()
    trainer._offload_teacher()  # already off: nothing again
    assert calls == {"empty_cache": emptied, "heap": 1}
    assert trainer.teacher_offloaded is True


def test_the_free_heap_goes_back_through_glibc_s_malloc_trim_0(monkeypatch):
    opened, trimmed = [], []

    def cdll(name):
        opened.append(name)
        return SimpleNamespace(malloc_trim=trimmed.append)

    monkeypatch.setattr(trainer_module, "ctypes", SimpleNamespace(CDLL=cdll))
    trainer_module._return_free_heap()
    assert opened == ["libc.so.6"] and trimmed == [0]

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    for library in (missing, lambda name: SimpleNamespace()):  # no glibc; a libc without malloc_trim
        monkeypatch.setattr(trainer_module, "ctypes", SimpleNamespace(CDLL=library))
        assert trainer_module._return_free_heap() is None


@pytest.mark.parametrize(
    "optimized, names, more",
    [
        (
            0,
            ["stage1.linear.weight", "stage1.linear.bias", "stage2.linear.weight", "stage2.linear.bias"],
            " ...",
        ),
        (
            1,
            ["stage1.linear.bias", "stage2.linear.weight", "stage2.linear.bias", "stage3.linear.weight"],
            " ...",
        ),
        (2, ["stage2.linear.weight", "stage2.linear.bias", "stage3.linear.weight", "stage3.linear.bias"], ""),
    ],
)
def test_the_optimizer_message_names_four_missing_parameters_and_says_when_there_are_more(
    optimized, names, more
):
    # three probed stages: six trainable probe parameters; the optimizer holds the first `optimized`
    student, objective = build_network("small_cnn"), _objective(("stage1", "stage2", "stage3"))
    probe_parameters = list(objective.stage_loss.student_probes.parameters())
    optimizer = torch.optim.SGD(list(student.parameters()) + probe_parameters[:optimized], lr=0.1)
    with pytest.raises(ValueError) as error:
        DistillationTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(_items(8), batch_size=4),
            network=student, optimizer=optimizer, loss_function=torch.nn.CrossEntropyLoss(),
            teacher=build_network("small_cnn"), distillation=objective,
        )  # fmt: skip
    listed = [f"stage_loss.student_probes.probes.{name}" for name in names]
    assert str(error.value) == (
        f"optimizer does not update the distillation's trainable parameters {listed}{more}: "
        "build it over the student's and the distillation's parameters"
    )
