"""DistillationTrainer: MONAI's SupervisedTrainer plus intermediate-layer distillation.

The parent's iteration is kept as it is (AMP, gradient accumulation, compile, events): the
teacher runs at ``FORWARD_COMPLETED`` (inside the parent's autocast region) and the
distillation terms are added to the task loss by wrapping ``loss_function``. Forward hooks on
both networks are registered for the duration of ``run()`` and removed on exit, also on errors.
With the teacher-target cache, the teacher leaves the training device once an epoch has filled
the cache, and comes back only for a sample that misses it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from pipeline.distillation.inference_teacher import channels_last, folded_copy, frozen_script
from pipeline.distillation.losses import DistillationObjective
from pipeline.distillation.target_cache import TeacherTargetCache
from pipeline.networks.hooks import FeatureHooks

LOSS_TERMS = "loss_terms"
OFFLOAD_DEVICE = torch.device("cpu")
"""Where a cached teacher waits between epochs (its targets are all in the cache)."""
logger = logging.getLogger(__name__)


class DistillationTrainer(SupervisedTrainer):
    """Train a student with cross-entropy plus distillation from a frozen teacher.

    loss = task_loss(student logits, label) + sum of the weighted terms of ``distillation``
    (stage terms between captured intermediate features, and logit KD).

    Args:
        teacher: the frozen teacher network. The trainer runs a copy in eval mode without
            gradients, with BatchNorm folded into convolutions where possible (same outputs, about
            half the teacher's CPU time); ``teacher`` itself is never changed.
        distillation: the :class:`DistillationObjective` (its trainable parts, e.g. the student's
            probes or adapters, must be in ``optimizer``).
        cache_teacher_targets: reuse the teacher's targets of a sample, keyed by (id, bias flag);
            after each epoch (the cache then holds every sample of it) the teacher's copy moves off
            an accelerator and freed memory is returned, so the student's steps do not pay for a
            resident teacher; a sample that misses the cache brings it back;
            only valid when the student's inputs carry no random augmentation.
        script_teacher: on CPU and without the cache, run the teacher as a frozen TorchScript
            (traced on the first batch, checked against the eager copy, which is kept if tracing
            fails or differs).
        task_weight: weight of the task loss (cross-entropy on the labels); 0 trains the student
            on the teacher's targets alone.
        task_ramp_epochs: the task loss's weight grows linearly from 0 (epoch 1) to ``task_weight``
            (epoch ``task_ramp_epochs + 1``): the student first follows the teacher alone. 0: no ramp.
        id_key, bias_key: batch keys of the sample id and the artifact flag (cache keys).
        args, kwargs: everything :class:`monai.engines.SupervisedTrainer` takes;
            ``loss_function`` is the task loss. ``decollate`` defaults to False here.

    Raises:
        ValueError: a stage name is unknown to the student or teacher, or the optimizer misses
            the distillation's trainable parameters (checked at construction); a stage's features
            do not fit its probe/adapter (checked on one batch when ``run()`` starts).
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        distillation: DistillationObjective,
        cache_teacher_targets: bool = False,
        script_teacher: bool = True,
        task_weight: float = 1.0,
        task_ramp_epochs: int = 0,
        id_key: str = "id",
        bias_key: str = "bias",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        self.teacher = folded_copy(teacher).to(self.state.device)
        self.distillation = distillation.to(self.state.device)
        self.target_cache = TeacherTargetCache() if cache_teacher_targets else None
        self.id_key, self.bias_key = id_key, bias_key
        self.script_teacher = bool(script_teacher)
        if task_weight < 0 or task_ramp_epochs < 0:
            raise ValueError(
                f"task_weight and task_ramp_epochs must be >= 0, got {task_weight!r} and {task_ramp_epochs!r}"
            )
        self.task_weight, self.task_ramp_epochs = float(task_weight), int(task_ramp_epochs)
        self._teacher_script: torch.jit.ScriptModule | None = None
        self.task_loss = self.loss_function
        self.loss_function = self._objective
        self._student_hooks: FeatureHooks | None = None
        self._teacher_hooks: FeatureHooks | None = None
        self._pending_terms: dict[str, torch.Tensor] = {}
        self._check_stage_names()
        self._check_optimizer()
        self.teacher_offloaded = self._warned_reload = False
        if self.target_cache is not None:
            self.add_event_handler(Events.EPOCH_COMPLETED, self._offload_teacher)
        self.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._distil)
        self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._average_distillation_gradients)

    def run(self) -> None:  # type: ignore[override]
        """Train with hooks registered on both networks; every hook is removed on exit."""
        student_hooks = FeatureHooks(self.network, self.distillation.student_stages)
        teacher_hooks = FeatureHooks(self.teacher, self.distillation.teacher_stages, detach=True)
        if self.teacher_offloaded:  # a second run(): its first epoch fills the cache again
            self.teacher.to(self.state.device)
            self.teacher_offloaded = False
        with student_hooks, teacher_hooks:
            self._student_hooks, self._teacher_hooks = student_hooks, teacher_hooks
            try:
                images = self._check_stage_shapes()
                if self._scripts_teacher(images):
                    stages = self.distillation.teacher_stages
                    self._teacher_script = frozen_script(self.teacher, stages, channels_last(images))
                    teacher_hooks.clear()
                super().run()
            finally:
                self._student_hooks = self._teacher_hooks = None
                self._teacher_script = None
                self._pending_terms = {}

    def _scripts_teacher(self, images: torch.Tensor | None) -> bool:
        """Script the teacher on CPU when it runs every step (with the cache it runs in the first
        epoch only, and the script's oneDNN buffers would outlive that: +40% peak memory here)."""
        return (
            self.script_teacher
            and self.target_cache is None
            and images is not None
            and images.device.type == "cpu"
        )

    def teacher_targets(self, images: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """The teacher's targets for ``images`` (from the cache when every sample is in it)."""
        keys = self._cache_keys(batch) if self.target_cache is not None else None
        if keys is not None:
            cached = self.target_cache.get(keys, images.device)
            if cached is not None:
                return cached
        if self.teacher_offloaded:
            self._reload_teacher(images.device)
        with torch.no_grad():
            logits, features = self._run_teacher(images)
            targets = self.distillation.teacher_targets(features, logits)
        if keys is not None:
            self.target_cache.put(keys, targets)
        return targets

    def _offload_teacher(self, engine: SupervisedTrainer | None = None) -> None:
        """The cache holds every sample of the epoch: move the teacher's copy off the device and
        return the memory its passes used (CUDA's cache; glibc's free heap on Linux)."""
        if self.teacher_offloaded:
            return
        self.teacher.to(OFFLOAD_DEVICE)
        self.teacher_offloaded = True
        gc.collect()
        if self.state.device.type == "cuda":
            torch.cuda.empty_cache()
        _return_free_heap()

    def _reload_teacher(self, device: torch.device) -> None:
        if not self._warned_reload:
            logger.warning(
                "a batch missed the teacher-target cache after an epoch had filled it (new sample ids "
                "or artifact states): the teacher runs again on %s", device,
            )
            self._warned_reload = True
        self.teacher.to(device)
        self.teacher_offloaded = False

    def _run_teacher(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's logits and stage features (call under ``torch.no_grad``)."""
        images = channels_last(images)
        if self._teacher_script is not None:
            logits, features = self._teacher_script(images)
            return logits, dict(zip(self.distillation.teacher_stages, features))
        self.teacher.eval()
        logits = self.teacher(images)
        features = dict(self._teacher_hooks.features)
        self._teacher_hooks.clear()
        return logits, features

    def _distil(self, engine: SupervisedTrainer) -> None:
        output = engine.state.output
        targets = self.teacher_targets(output[Keys.IMAGE], engine.state.batch)
        self._pending_terms = self.distillation(
            self._student_hooks.features, output[Keys.PRED], targets, output[Keys.LABEL]
        )

    def task_weight_at(self, epoch: int) -> float:
        """Weight of the task loss in ``epoch`` (1-based), after the ramp."""
        if self.task_ramp_epochs <= 0:
            return self.task_weight
        return self.task_weight * min(1.0, (epoch - 1) / self.task_ramp_epochs)

    def _objective(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        task = self.task_loss(pred, target).mean()
        terms, self._pending_terms = self._pending_terms, {}
        weighted = self.task_weight_at(self.state.epoch) * task
        total = weighted + sum(terms.values()) if terms else weighted
        self.state.output[LOSS_TERMS] = {
            "ce": task.detach(),
            **{k: v.detach() for k, v in terms.items()},
            "total": total.detach(),
        }
        self._student_hooks.clear()
        return total

    def _average_distillation_gradients(self, engine: SupervisedTrainer) -> None:
        """Under DDP only the student is wrapped: average the probes'/adapters' gradients by hand."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world < 2:
            return
        for parameter in self.distillation.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= world

    def _cache_keys(self, batch: dict) -> list[tuple[str, int]]:
        if self.id_key not in batch:
            raise ValueError(
                f"cache_teacher_targets needs '{self.id_key}' in the batch; keys: {sorted(batch)}"
            )
        ids = [str(i) for i in batch[self.id_key]]
        bias = batch.get(self.bias_key)
        flags = [0] * len(ids) if bias is None else [int(b) for b in torch.as_tensor(bias).reshape(-1)]
        return list(zip(ids, flags))

    def _check_stage_names(self) -> None:
        with FeatureHooks(self.network, self.distillation.student_stages):
            pass
        with FeatureHooks(self.teacher, self.distillation.teacher_stages):
            pass

    def _check_optimizer(self) -> None:
        optimized = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [
            n for n, p in self.distillation.named_parameters() if p.requires_grad and id(p) not in optimized
        ]
        if missing:
            raise ValueError(
                f"optimizer does not update the distillation's trainable parameters {missing[:4]}"
                f"{' ...' if len(missing) > 4 else ''}: build it over the student's and the distillation's parameters"
            )

    def _check_stage_shapes(self) -> torch.Tensor | None:
        """Run one batch through both networks and the objective (no training, no BN updates);
        returns the batch's images."""
        if self.data_loader is None:
            return None
        batch = next(iter(self.data_loader))
        images, labels = self.prepare_batch(batch, self.state.device, self.non_blocking, **self.to_kwargs)[:2]
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                student_logits = self.network(images[:2])
                teacher_logits, teacher_features = self._run_teacher(images[:2])
                targets = self.distillation.teacher_targets(teacher_features, teacher_logits)
                self.distillation(self._student_hooks.features, student_logits, targets, labels[:2])
        finally:
            self.network.train(was_training)
            self._student_hooks.clear()
            self._teacher_hooks.clear()
        return images


def _return_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def loss_terms(output: dict) -> dict[str, float]:
    """``output_transform`` for StatsHandler/TensorBoardStatsHandler: every loss term by name."""
    return {name: float(value) for name, value in output[LOSS_TERMS].items()}
