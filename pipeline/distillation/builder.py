"""Build the distillation objective of a bundle from plain config values."""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

from pipeline.distillation.losses import (
    AttentionTransferStageLoss,
    DistillationObjective,
    FeatureMSEStageLoss,
    ProbeKLStageLoss,
)
from pipeline.distillation.stage_pairing import AUTO, auto_stage_pairs
from pipeline.distillation.teacher import Teacher
from pipeline.networks import network_stages, unwrap_model
from pipeline.networks.probes import StageProbes

STAGE_LOSSES = ("probe_kl", "feature_mse", "attention")


def build_distillation(
    kind: str,
    stage_pairs: Sequence[Sequence[str]] | str,
    teacher: Teacher,
    student_network: str,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    student_options: Mapping | None = None,
    stage_weights: float | Sequence[float] = 1.0,
    logit_weight: float = 1.0,
    temperature: float = 2.0,
    student_probes: str = "trained",
    image_size: Sequence[int] | None = None,
) -> DistillationObjective:
    """A :class:`DistillationObjective` for ``kind`` with channels taken from the network registry.

    Args:
        kind: ``probe_kl`` (the paper's intermediate probes), ``feature_mse`` (FitNets) or
            ``attention`` (attention transfer).
        stage_pairs: ``[[student_stage, teacher_stage], ...]``: any subset of stages, and
            teacher stages of another architecture or width; or ``"auto"``: each teacher stage
            (probe_kl: each probed one) with the student stage of the same spatial size on
            ``image_size`` inputs (:mod:`pipeline.distillation.stage_pairing`; the identity
            pairing when both are the same network).
        teacher: the loaded teacher (network, fitted probes, spec).
        student_network, spatial_dims, in_channels, num_classes, student_options: the student's
            registry name and build arguments (to size probes/adapters without running it).
        stage_weights, logit_weight, temperature: see :class:`DistillationObjective`.
        student_probes: ``trained`` (probe_kl: the student's own probes, trained jointly by the
            KL), ``labels`` (the student's own probes, fitted to the labels on detached features
            while the KL trains only the student's features) or ``teacher`` (the student's stages read through frozen copies of the teacher's probes,
            so the KL can only be lowered by changing the student's features; needs pairs of
            equal stage names and channels).
        image_size: the input's spatial size, needed by ``stage_pairs="auto"``.

    Raises:
        ValueError: unknown ``kind``, a stage unknown to the student's registry entry or not
            probed by the teacher, or ``auto`` without ``image_size`` or without any pair.
    """
    if kind not in STAGE_LOSSES:
        raise ValueError(f"distillation kind '{kind}' is unknown; choose one of {list(STAGE_LOSSES)}")
    pairs = _stage_pairs(
        kind, stage_pairs, teacher, student_network, spatial_dims, in_channels, num_classes, student_options,
        image_size,
    )  # fmt: skip
    student_channels = network_stages(
        student_network, spatial_dims, in_channels, num_classes, **(student_options or {})
    )
    student_stages = [p[0] for p in pairs]
    unknown = [s for s in student_stages if s not in student_channels]
    if unknown:
        raise ValueError(
            f"stage_pairs: student stage(s) {unknown} unknown to '{student_network}'; stages: {list(student_channels)}"
        )
    if kind == "probe_kl":
        missing = [p[1] for p in pairs if p[1] not in teacher.spec.stages]
        if missing:
            raise ValueError(
                f"stage_pairs: teacher stage(s) {missing} have no fitted probe; the teacher probed {teacher.spec.stages}"
            )
        if student_probes == "teacher":
            probes = _frozen_teacher_probes(pairs, teacher, student_channels)
        elif student_probes in ("trained", "labels"):
            probes = StageProbes(
                {s: student_channels[s] for s in dict.fromkeys(student_stages)}, num_classes, spatial_dims
            )
        else:
            raise ValueError(
                f"student_probes must be 'trained', 'labels' or 'teacher', got {student_probes!r}"
            )
        probe_fit = "labels" if student_probes == "labels" else "kl"
        stage_loss = ProbeKLStageLoss(pairs, probes, teacher.probes, temperature, probe_fit=probe_fit)
    elif kind == "feature_mse":
        spec = teacher.spec
        teacher_channels = network_stages(
            spec.network_name, spec.spatial_dims, spec.in_channels, spec.num_classes, **spec.network_options
        )
        stage_loss = FeatureMSEStageLoss(pairs, student_channels, teacher_channels, spatial_dims)
    else:
        stage_loss = AttentionTransferStageLoss(pairs)
    return DistillationObjective(stage_loss, stage_weights, logit_weight, temperature)


def _stage_pairs(
    kind, stage_pairs, teacher: Teacher, student_network, spatial_dims, in_channels, num_classes, student_options,
    image_size,
) -> list[list[str]]:  # fmt: skip
    """The given pairs as lists, or for ``auto`` the pairs by spatial size."""
    if not isinstance(stage_pairs, str):
        return [list(p) for p in stage_pairs]
    if stage_pairs != AUTO:
        raise ValueError(
            f"stage_pairs must be '{AUTO}' or [[student stage, teacher stage], ...], got {stage_pairs!r}"
        )
    if image_size is None:
        raise ValueError("stage_pairs: auto needs image_size (the input's spatial size) to measure the stages")
    spec = teacher.spec
    teacher_stages = spec.stages if kind == "probe_kl" else list(network_stages(
        spec.network_name, spec.spatial_dims, spec.in_channels, spec.num_classes, **spec.network_options
    ))  # fmt: skip
    return auto_stage_pairs(
        student_network, spec.network_name, teacher_stages, image_size, spatial_dims, in_channels, num_classes,
        student_options, spec.network_options,
    )  # fmt: skip


def _frozen_teacher_probes(pairs, teacher: Teacher, student_channels) -> StageProbes:
    """A frozen copy of the teacher's probes, used on the student's features of the same stages."""
    unequal = [p for p in pairs if p[0] != p[1]]
    if unequal:
        raise ValueError(f"student_probes='teacher' needs pairs of the same stage, got {unequal}")
    probes = copy.deepcopy(teacher.probes).requires_grad_(False)
    for stage, _ in pairs:
        expected = probes.probe(stage).in_channels
        if expected != student_channels[stage]:
            raise ValueError(
                f"student_probes='teacher': stage '{stage}' has {student_channels[stage]} channels in the "
                f"student but the teacher's probe expects {expected}"
            )
    return probes


def check_start_from_teacher(teacher: Teacher, student_network: str, student_options: Mapping | None = None) -> None:
    """Refuse ``init_from_teacher`` for a student that is not the teacher's network and options.

    Raises:
        ValueError: naming both architectures and the setting to change.
    """
    spec = teacher.spec
    if spec.network_name != student_network or dict(spec.network_options or {}) != dict(student_options or {}):
        raise ValueError(
            f"init_from_teacher: the student ({student_network}, options {dict(student_options or {})}) is not "
            f"the teacher's architecture ({spec.network_name}, options {dict(spec.network_options or {})}), so it "
            "cannot start from the teacher's weights; set init_from_teacher: false for another student "
            "(in an experiment: method_settings: {distilled: {init_from_teacher: false}})"
        )


def start_from_teacher(network, teacher: Teacher, student_network: str, student_options: Mapping | None = None):
    """Copy the teacher's weights into the student ``network`` (same architecture and options).

    Raises:
        ValueError: the student's architecture or options differ from the teacher's.
    """
    check_start_from_teacher(teacher, student_network, student_options)
    unwrap_model(network).load_state_dict(teacher.network.state_dict())
    return network
