"""Distillation losses: per-stage terms between teacher and student features, and logit KD.

Each stage loss has two halves so that the teacher's half can be cached:
``teacher_targets(teacher_features)`` (run without gradients; a small tensor per sample) and
``forward(student_features, targets)`` returning one loss per stage pair.
Stage pairs are ``(student_stage, teacher_stage)`` module paths.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def kl_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) of the softened class distributions, per sample, batch mean, times T^2."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    per_sample = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return per_sample.mean() * temperature**2


def _pair_names(stage_pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    pairs = [tuple(p) for p in stage_pairs]
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(n, str) for n in pair):
            raise ValueError(
                f"stage_pairs: each entry must be [student_stage, teacher_stage], got {list(pair)!r}"
            )
    if not pairs:
        raise ValueError("stage_pairs: give at least one [student_stage, teacher_stage] pair")
    return pairs


def pair_label(pair: tuple[str, str]) -> str:
    """Name of a stage pair in logs: ``stage2`` when both sides agree, else ``layer2<-block3``."""
    return pair[0] if pair[0] == pair[1] else f"{pair[0]}<-{pair[1]}"


class ProbeKLStageLoss(nn.Module):
    """KL between the teacher's frozen stage probes and the student's trainable stage probes.

    Args:
        stage_pairs: ``[[student_stage, teacher_stage], ...]``.
        student_probes: :class:`pipeline.networks.probes.StageProbes` over the student stages
            (trained with the student).
        teacher_probes: the teacher's fitted probes over the teacher stages (frozen here).
        temperature: softening temperature T.
        probe_fit: how the student's probes learn: ``kl`` (by the KL itself, jointly with the
            student) or ``labels`` (by cross-entropy on the labels from the detached stage
            features; the KL then reaches only the student's features, so a probe that finds the
            shortcut in a stage makes the KL push the shortcut out of that stage).
    """

    PROBE_FITS = ("kl", "labels")

    def __init__(
        self,
        stage_pairs,
        student_probes: nn.Module,
        teacher_probes: nn.Module,
        temperature: float = 2.0,
        probe_fit: str = "kl",
    ):
        super().__init__()
        if probe_fit not in self.PROBE_FITS:
            raise ValueError(f"probe_fit must be one of {list(self.PROBE_FITS)}, got {probe_fit!r}")
        self.stage_pairs = _pair_names(stage_pairs)
        self.student_probes = student_probes
        self.teacher_probes = teacher_probes.eval().requires_grad_(False)
        self.temperature = float(temperature)
        self.probe_fit = probe_fit

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_probes.eval()
        return self

    def teacher_targets(self, teacher_features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stages = dict.fromkeys(t for _, t in self.stage_pairs)
        return {t: self.teacher_probes.probe(t)(teacher_features[t]) for t in stages}

    def forward(self, student_features, targets) -> dict[str, torch.Tensor]:
        stages = dict.fromkeys(s for s, _ in self.stage_pairs)
        logits = {s: self._student_logits(s, student_features[s]) for s in stages}
        return {
            pair_label(p): kl_divergence(logits[p[0]], targets[p[1]], self.temperature)
            for p in self.stage_pairs
        }

    def _student_logits(self, stage: str, features: torch.Tensor) -> torch.Tensor:
        probe = self.student_probes.probe(stage)
        if self.probe_fit == "kl":
            return probe(features)
        frozen = {name: p.detach() for name, p in probe.named_parameters()}
        return torch.func.functional_call(probe, frozen, (features,))

    def probe_fit_losses(self, student_features, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of each student probe on the labels (``probe_fit='labels'``; else empty)."""
        if self.probe_fit != "labels":
            return {}
        stages = dict.fromkeys(s for s, _ in self.stage_pairs)
        labels = labels.reshape(-1).long()
        return {
            s: F.cross_entropy(self.student_probes.probe(s)(student_features[s].detach()).float(), labels)
            for s in stages
        }


class FeatureMSEStageLoss(nn.Module):
    """FitNets: mean squared error between teacher feature maps and adapted student maps.

    A 1x1 convolution per pair maps the student's channels to the teacher's; the student map is
    resized to the teacher's spatial size when they differ.

    Args:
        stage_pairs: ``[[student_stage, teacher_stage], ...]``.
        student_channels, teacher_channels: channel count per stage (from the network registry).
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        stage_pairs,
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int],
        spatial_dims: int = 2,
    ):
        super().__init__()
        self.stage_pairs = _pair_names(stage_pairs)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.adapters = nn.ModuleList(
            conv(
                _channels(student_channels, s, "student"),
                _channels(teacher_channels, t, "teacher"),
                kernel_size=1,
            )
            for s, t in self.stage_pairs
        )

    def teacher_targets(self, teacher_features) -> dict[str, torch.Tensor]:
        return {t: teacher_features[t] for _, t in self.stage_pairs}

    def forward(self, student_features, targets) -> dict[str, torch.Tensor]:
        losses = {}
        for adapter, pair in zip(self.adapters, self.stage_pairs):
            target = targets[pair[1]]
            mapped = _resize_to(adapter(student_features[pair[0]]), target)
            losses[pair_label(pair)] = F.mse_loss(mapped.float(), target.float())
        return losses


class AttentionTransferStageLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, 2017) between stage feature maps.

    The attention map of a stage is the channel mean of ``|f|^p``, L2-normalised over space; the
    loss per pair is the squared distance between student and teacher maps (the student's
    feature map is resized to the teacher's spatial size first).
    """

    def __init__(self, stage_pairs, p: float = 2.0):
        super().__init__()
        self.stage_pairs = _pair_names(stage_pairs)
        self.p = p

    def attention(self, feature: torch.Tensor) -> torch.Tensor:
        """Normalised attention map (B, 1, *spatial) of a feature map (B, C, *spatial)."""
        attention = feature.float().abs().pow(self.p).mean(dim=1, keepdim=True)
        norm = attention.flatten(1).norm(dim=1).clamp_min(1e-12)
        return attention / norm.view(-1, *([1] * (attention.ndim - 1)))

    def teacher_targets(self, teacher_features) -> dict[str, torch.Tensor]:
        return {t: self.attention(teacher_features[t]) for _, t in self.stage_pairs}

    def forward(self, student_features, targets) -> dict[str, torch.Tensor]:
        losses = {}
        for pair in self.stage_pairs:
            target = targets[pair[1]]
            student = self.attention(_resize_to(student_features[pair[0]], target))
            losses[pair_label(pair)] = (student - target).pow(2).flatten(1).sum(dim=1).mean()
        return losses


class DistillationObjective(nn.Module):
    """Weighted sum of the stage terms and the logit KD term (cross-entropy is added by the trainer).

    Args:
        stage_loss: one of the stage losses of this module.
        stage_weights: one weight per stage pair (same order), or a single weight for all.
        logit_weight: weight of KL(teacher logits || student logits) at ``temperature``; 0 disables.
        temperature: temperature of the logit term.
    """

    def __init__(
        self, stage_loss: nn.Module, stage_weights=1.0, logit_weight: float = 1.0, temperature: float = 2.0
    ):
        super().__init__()
        self.stage_loss = stage_loss
        pairs = stage_loss.stage_pairs
        weights = (
            [float(stage_weights)] * len(pairs)
            if isinstance(stage_weights, (int, float))
            else list(stage_weights)
        )
        if len(weights) != len(pairs):
            raise ValueError(
                f"stage_weights: {len(weights)} weight(s) {weights} for {len(pairs)} stage pair(s) {[list(p) for p in pairs]}"
            )
        self.stage_weights = dict(zip([pair_label(p) for p in pairs], weights))
        self.logit_weight = float(logit_weight)
        self.temperature = float(temperature)

    @property
    def teacher_stages(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.stage_loss.stage_pairs))

    @property
    def student_stages(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.stage_loss.stage_pairs))

    def teacher_targets(self, teacher_features, teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the student's loss needs from the teacher, keyed by teacher stage and ``logits``."""
        targets = self.stage_loss.teacher_targets(teacher_features)
        targets["logits"] = teacher_logits
        return targets

    def forward(self, student_features, student_logits, targets, labels=None) -> dict[str, torch.Tensor]:
        """Weighted terms by name (``kd_<pair>``, ``kd_logits``, and ``probe_<stage>`` when the
        student's probes are fitted to ``labels``), ready to be summed."""
        terms = {
            f"kd_{name}": self.stage_weights[name] * loss
            for name, loss in self.stage_loss(student_features, targets).items()
        }
        if getattr(self.stage_loss, "probe_fit", None) == "labels":
            if labels is None:
                raise ValueError("student probes fitted to the labels need the batch labels")
            fitted = self.stage_loss.probe_fit_losses(student_features, labels)
            terms.update({f"probe_{stage}": loss for stage, loss in fitted.items()})
        if self.logit_weight:
            terms["kd_logits"] = self.logit_weight * kl_divergence(
                student_logits, targets["logits"], self.temperature
            )
        return terms


def _channels(channels: Mapping[str, int], stage: str, side: str) -> int:
    if stage not in channels:
        raise ValueError(f"{side} stage '{stage}' has no channel count; known stages: {list(channels)}")
    return int(channels[stage])


def _resize_to(feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if feature.shape[2:] == target.shape[2:]:
        return feature
    mode = "bilinear" if feature.ndim == 4 else "trilinear"
    return F.interpolate(feature, size=target.shape[2:], mode=mode, align_corners=False)
