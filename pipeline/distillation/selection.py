"""Checkpoint selection for the distilled student without test data or bias labels.

The student's biased validation AUC rewards the shortcut: on data where the artifact goes with
the label, a student that reads the artifact scores best, so ``model.pt`` chosen on it can be the
most shortcut-reliant epoch. :class:`TeacherAgreement` scores the student by how closely it
follows the specialist teacher on the same unlabelled validation images (minus the mean
KL(teacher || student) of the class distributions): a student that departs from the teacher where
the artifact is scores worse, and no label or bias flag is read.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn


def _images_and_predictions(output) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, student predictions) from a SupervisedEvaluator's output (decollated or not)."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        images = torch.stack([torch.as_tensor(o["image"]) for o in output])
        logits = torch.stack([torch.as_tensor(o["pred"]) for o in output])
        return images, logits
    return torch.as_tensor(output["image"]), torch.as_tensor(output["pred"])


class TeacherAgreement(Metric):
    """Minus the mean KL(teacher || student) over the evaluated images (higher: closer to the teacher).

    Args:
        teacher: the frozen teacher network (run in eval mode without gradients).
        output_transform: maps the engine output to (images, student predictions); the default
            reads the ``image`` and ``pred`` keys.
        from_logits: the student's predictions are logits (else class probabilities, as after the
            bundles' validation post-processing).
        device: where the teacher runs; default: the images' device.
    """

    def __init__(
        self,
        teacher: nn.Module,
        output_transform: Callable = _images_and_predictions,
        from_logits: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.teacher = teacher
        self.from_logits = bool(from_logits)
        self._teacher_device = device
        super().__init__(output_transform=output_transform, device="cpu")

    @reinit__is_reduced
    def reset(self) -> None:
        self._kl_sum = torch.tensor(0.0, dtype=torch.float64)
        self._count = 0

    @reinit__is_reduced
    def update(self, output) -> None:
        images, student = output
        device = torch.device(self._teacher_device or images.device)
        if next(self.teacher.parameters(), images).device != device:  # e.g. a teacher loaded on the CPU
            self.teacher.to(device)
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits = self.teacher(images.to(device)).float()
        log_t = F.log_softmax(teacher_logits, dim=1)
        student = student.to(device).float()
        log_s = F.log_softmax(student, dim=1) if self.from_logits else student.clamp_min(1e-12).log()
        kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
        self._kl_sum += kl.double().sum().cpu()
        self._count += int(kl.numel())

    @sync_all_reduce("_kl_sum", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise ValueError("TeacherAgreement needs at least one evaluated image")
        return float(-self._kl_sum / self._count)


class ValidationEpoch(Metric):
    """The training epoch being validated: as a key metric it makes ``model.pt`` the last validated
    epoch's network (a later epoch scores higher than every earlier one, also across a resume).

    MONAI's evaluators run with the trainer's epoch as their own (``Evaluator.run(global_epoch)``).
    """

    def __init__(self, output_transform: Callable = lambda output: output) -> None:
        self._epoch = 0
        super().__init__(output_transform=output_transform, device="cpu")

    def reset(self) -> None:
        pass

    def update(self, output) -> None:
        pass

    def completed(self, engine, name: str) -> None:
        self._epoch = int(engine.state.epoch)
        super().completed(engine, name)

    def compute(self) -> float:
        return float(self._epoch)


SELECTIONS = ("final", "teacher_agreement", "val_auc")


def selection_metrics(selection: str, teacher: nn.Module, device=None) -> tuple[dict, dict]:
    """(key metric, additional metrics) of the student's validation: the key one selects ``model.pt``.

    ``final``: the last validated epoch (``val_epoch``); ``teacher_agreement``:
    :class:`TeacherAgreement` on the validation images (``val_agreement``), which favours the
    epochs closest to the teacher (with a cross-entropy ramp or a student started from the
    teacher: the first ones); ``val_auc``: the validation AUC, which rewards the shortcut on biased
    validation data. The validation AUC is computed in every case (logs, early stopping).

    Raises:
        ValueError: an unknown ``selection``.
    """
    from monai.handlers import ROCAUC, from_engine

    val_auc = {"val_auc": ROCAUC(output_transform=from_engine(["pred", "label"]))}
    if selection == "val_auc":
        return val_auc, {}
    if selection == "final":
        return {"val_epoch": ValidationEpoch()}, val_auc
    if selection == "teacher_agreement":
        if teacher is None:
            raise ValueError("selection 'teacher_agreement' needs a teacher to agree with; the teacher bundle's "
                             "teacher_selection takes 'final' or 'val_auc'")
        return {"val_agreement": TeacherAgreement(teacher, device=device)}, val_auc
    raise ValueError(f"selection '{selection}' is unknown; choose one of {list(SELECTIONS)}")
