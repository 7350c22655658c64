"""Teacher and distillation bundles interrupted mid-run and resumed end where an uninterrupted run ends.

Each run is stopped by an error at the end of its second epoch, before that epoch's checkpoint
is written (as a crash would stop it), then resumed from epoch 1's checkpoint with
``resume: true`` in a new workflow. Compared with one uninterrupted run of the same config: the network, the student's
trainable probes (the distillation objective), optimizer and LR schedule states, the trainer's
counters, and for the teacher the probes fitted after training (teacher.pt). The teacher-target
cache is not checkpointed: the resumed run refills it from the teacher, and it must then hold
every sample's targets as the uninterrupted run cached them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_helpers import assert_same_weights, run_workflow, tiny_settings, workflow
from ignite.engine import Events

EPOCHS = 3


class Interrupted(RuntimeError):
    pass


def _settings(datalist, root, **extra):
    return tiny_settings(
        datalist, root, size=16, batch_size=8, precise_bn_batches=2, max_epochs=EPOCHS, **extra
    )


def _interrupted_then_resumed(bundle, settings):
    wf = workflow(bundle, "train", settings)

    def stop(engine):
        raise Interrupted(f"stopped after epoch {engine.state.epoch}")

    wf.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_COMPLETED(once=2), stop)
    with pytest.raises(RuntimeError) as error:  # MONAI's ConfigWorkflow wraps what the trainer raised
        wf.run()
    cause = error.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, Interrupted), error.value
    models = Path(settings["output_root"]) / bundle / "models"
    assert not (models / "checkpoint_final.pt").exists()
    assert list(models.glob("checkpoint_epoch=*.pt")), "no per-epoch checkpoint to resume from"
    resumed = run_workflow(bundle, "train", {**settings, "resume": True})
    trainer = resumed.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == EPOCHS
    return models, trainer


def _final(models: Path) -> dict:
    return torch.load(models / "checkpoint_final.pt", weights_only=True)


def _assert_same_checkpoint(resumed: dict, whole: dict, keys):
    assert (
        resumed["trainer"]["iteration"]
        == whole["trainer"]["iteration"]
        == EPOCHS * whole["trainer"]["epoch_length"]
    )
    for key in keys:
        assert_same_weights(resumed[key], whole[key], f"{key}.")


@pytest.mark.slow
def test_teacher_resumes_to_the_weights_and_probes_of_an_uninterrupted_run(tiny_datalist_2d, tmp_path):
    extra = {"probe_epochs": 1}
    whole = tmp_path / "whole"
    run_workflow("teacher", "train", _settings(tiny_datalist_2d, whole, **extra))
    models, _ = _interrupted_then_resumed(
        "teacher", _settings(tiny_datalist_2d, tmp_path / "killed", **extra)
    )
    whole_models = whole / "teacher" / "models"
    _assert_same_checkpoint(_final(models), _final(whole_models), ["network", "optimizer", "lr_scheduler"])
    resumed_teacher = torch.load(models / "teacher.pt", weights_only=True)
    whole_teacher = torch.load(whole_models / "teacher.pt", weights_only=True)
    assert_same_weights(resumed_teacher["network"], whole_teacher["network"], "teacher network.")
    assert_same_weights(resumed_teacher["probes"], whole_teacher["probes"], "teacher probes.")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["probe_kl", "feature_mse"])
def test_distillation_resumes_to_the_student_probes_and_optimizer_of_an_uninterrupted_run(
    tiny_datalist_2d, tmp_path, kind
):
    teacher_root = tmp_path / "teacher_run"
    run_workflow("teacher", "train", tiny_settings(tiny_datalist_2d, teacher_root, size=16, batch_size=8,
                                                   precise_bn_batches=2, probe_epochs=1))  # fmt: skip
    extra = {
        "teacher_checkpoint": str(teacher_root / "teacher" / "models" / "teacher.pt"),
        "distill_kind": kind,
        "cache_teacher_targets": True,
    }
    whole = tmp_path / "whole"
    whole_run = run_workflow("distillation", "train", _settings(tiny_datalist_2d, whole, **extra))
    whole_trainer = whole_run.parser.get_parsed_content("train#trainer")
    killed = _settings(tiny_datalist_2d, tmp_path / "killed", **extra)
    models, trainer = _interrupted_then_resumed("distillation", killed)
    resumed, uninterrupted = _final(models), _final(whole / "distillation" / "models")
    # the distillation entry holds the student's probes (probe_kl) or adapters (feature_mse)
    trainable = [k for k in uninterrupted["distillation"] if "student_probes" in k or "adapters" in k]
    assert trainable
    _assert_same_checkpoint(resumed, uninterrupted, ["network", "distillation", "optimizer", "lr_scheduler"])
    # the resumed run (epochs 2 and 3, from epoch 1's checkpoint) refilled the teacher-target cache
    # in its first epoch and read it in its second, with every sample's targets as the
    # uninterrupted run cached them
    cached = {str(k): v for k, v in trainer.target_cache.items()}
    steps = whole_trainer.state.epoch_length
    assert len(cached) > 0 and (trainer.target_cache.hits, trainer.target_cache.misses) == (steps, steps)
    assert whole_trainer.target_cache.hits == (EPOCHS - 1) * steps
    assert_same_weights(
        cached, {str(k): v for k, v in whole_trainer.target_cache.items()}, "teacher targets."
    )
