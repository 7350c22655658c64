"""With the teacher-target cache, the teacher leaves the device once an epoch has filled the cache."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.distillation.test_distillation_trainer import _items, _trainer


def _count_teacher_passes(trainer):
    calls = []
    run_teacher = trainer._run_teacher

    def counted(images):
        calls.append((trainer.state.epoch, len(images)))
        return run_teacher(images)

    trainer._run_teacher = counted
    return calls


def _record_moves(trainer):
    moves = []
    to = trainer.teacher.to

    def recorded(*args, **kwargs):
        moves.append(torch.device(args[0]))
        return to(*args, **kwargs)

    trainer.teacher.to = recorded
    return moves


def test_the_cached_teacher_runs_in_the_first_epoch_only_and_then_leaves_the_device():
    trainer = _trainer(cache=True, epochs=3)
    passes, moves = _count_teacher_passes(trainer), _record_moves(trainer)
    trainer.run()
    # the shape check (epoch 0, two images) and the three batches of epoch 1; none later
    assert [epoch for epoch, _ in passes] == [0, 1, 1, 1]
    assert trainer.teacher_offloaded
    assert moves == [torch.device("cpu")]  # once, after epoch 1 (not again after epochs 2 and 3)
    assert trainer.target_cache.misses == 3 and trainer.target_cache.hits == 6


def test_a_live_teacher_stays_where_it_runs():
    trainer = _trainer(cache=False, epochs=2)
    moves = _record_moves(trainer)
    trainer.run()
    assert not trainer.teacher_offloaded and moves == []


class _RenamedInEpoch3(torch.utils.data.Dataset):
    """The trainer's items; from epoch 3 on, sample s0 has a new id (so its batch misses the cache)."""

    def __init__(self, trainer):
        self.items, self.trainer = _items(), trainer

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        return dict(item, id="s0-new") if item["id"] == "s0" and self.trainer.state.epoch >= 3 else item


def test_a_sample_missing_the_cache_brings_the_teacher_back_with_one_warning(caplog):
    trainer = _trainer(cache=True, epochs=4)
    trainer.data_loader = torch.utils.data.DataLoader(_RenamedInEpoch3(trainer), batch_size=8)
    passes, moves = _count_teacher_passes(trainer), _record_moves(trainer)
    with caplog.at_level(logging.WARNING, logger="pipeline.distillation.trainer"):
        trainer.run()
    # epoch 1 fills the cache; in epoch 3 the batch holding the renamed sample runs the teacher
    assert [epoch for epoch, _ in passes] == [0, 1, 1, 1, 3]
    # off after epoch 1, back for the miss in epoch 3, off again after it (epochs 2 and 4: no move)
    assert moves == [torch.device("cpu")] * 3 and trainer.teacher_offloaded
    assert len([r for r in caplog.records if "missed the teacher-target cache" in r.message]) == 1
    assert ("s0-new", 0) in dict(trainer.target_cache.items())


def test_a_second_run_fills_the_cache_with_the_teacher_back_on_the_device():
    trainer = _trainer(cache=True, epochs=1)
    trainer.run()
    moves = _record_moves(trainer)
    trainer.state.max_epochs = 2
    trainer.run()
    assert moves[0] == torch.device("cpu") and trainer.teacher_offloaded  # brought back, then off again
    assert len(moves) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_cached_teacher_frees_its_device_memory():
    trainer = _trainer(cache=True, epochs=1, device="cuda")
    teacher_bytes = sum(p.numel() * p.element_size() for p in trainer.teacher.parameters())
    teacher_bytes += sum(b.numel() * b.element_size() for b in trainer.teacher.buffers())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    trainer._offload_teacher()
    torch.cuda.synchronize()
    assert all(p.device.type == "cpu" for p in trainer.teacher.parameters())
    assert before - torch.cuda.memory_allocated() >= teacher_bytes
