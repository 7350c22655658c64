"""The distillation bundle's model.pt is chosen without test data or bias labels, and the student
can start from the teacher."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import run_workflow, tiny_settings


@pytest.fixture(scope="module")
def teacher_root(tiny_datalist_2d, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_workflow("teacher", "train", tiny_settings(tiny_datalist_2d, root, probe_epochs=1, max_epochs=2))
    return root


def _network(path):
    """The network's state dict (model.pt holds it alone, checkpoint_final.pt under ``network``)."""
    content = torch.load(path, weights_only=True)
    return content.get("network", content)


def _equal(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def test_final_selection_makes_model_pt_the_last_epoch(teacher_root, tiny_datalist_2d):
    settings = tiny_settings(tiny_datalist_2d, teacher_root, max_epochs=3, bundle_name="student_final")
    run_workflow("distillation", "train", settings)
    models = teacher_root / "student_final" / "models"
    assert _equal(_network(models / "model.pt"), _network(models / "checkpoint_final.pt"))


def test_init_from_teacher_starts_at_the_teachers_weights(teacher_root, tiny_datalist_2d):
    """With a zero learning rate the trained weights stay the teacher's (BatchNorm statistics are
    re-estimated on the training data, so only the learnt parameters are compared)."""
    settings = tiny_settings(tiny_datalist_2d, teacher_root, bundle_name="student_init", learning_rate=0.0,
                             init_from_teacher=True)  # fmt: skip
    run_workflow("distillation", "train", settings)
    student = _network(teacher_root / "student_init" / "models" / "model.pt")
    teacher = torch.load(teacher_root / "teacher" / "models" / "teacher.pt", weights_only=True)
    teacher_net = teacher["network"]
    learnt = [
        k for k in teacher_net if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert learnt and _equal(student, teacher_net, learnt)
    scratch = tiny_settings(tiny_datalist_2d, teacher_root, bundle_name="student_scratch", learning_rate=0.0,
                            init_from_teacher=False)  # fmt: skip
    run_workflow("distillation", "train", scratch)
    assert not _equal(_network(teacher_root / "student_scratch" / "models" / "model.pt"), teacher_net, learnt)


def test_teacher_final_selection_makes_model_pt_the_last_epoch(tiny_datalist_2d, tmp_path):
    settings = tiny_settings(tiny_datalist_2d, tmp_path, probe_epochs=1, max_epochs=3, teacher_selection="final")
    run_workflow("teacher", "train", settings)
    models = tmp_path / "teacher" / "models"
    assert _equal(_network(models / "model.pt"), _network(models / "checkpoint_final.pt"))
    saved = torch.load(models / "teacher.pt", weights_only=True)["network"]
    assert _equal(saved, _network(models / "checkpoint_final.pt"))


def test_teacher_selection_rejects_an_unknown_choice(tiny_datalist_2d, tmp_path):
    settings = tiny_settings(tiny_datalist_2d, tmp_path, probe_epochs=1, max_epochs=1, teacher_selection="best")
    with pytest.raises(Exception) as error:  # MONAI wraps the config's error: the cause names the value
        run_workflow("teacher", "train", settings)
    chain, cause = [], error.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert any("selection 'best' is unknown" in message for message in chain)


def test_teacher_selection_cannot_be_agreement_with_itself():
    from pipeline.distillation.selection import selection_metrics

    with pytest.raises(ValueError, match="teacher_selection takes 'final' or 'val_auc'"):
        selection_metrics("teacher_agreement", None)
