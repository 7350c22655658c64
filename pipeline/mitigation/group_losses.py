"""Group-aware classification losses that read the group of each sample from the current batch.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, target)`` only; the groups come from
the batch dictionary through :meth:`set_batch`, which
:class:`pipeline.mitigation.handlers.BatchContextHandler` calls at every iteration start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.mitigation.cross_entropy import per_sample_cross_entropy
from pipeline.mitigation.groups import NUM_GROUPS, group_index

__all__ = ["GroupDROLoss", "GroupReweightedLoss"]


def _class_index(label: object) -> object:
    """One-hot ``(B, C)`` label tensors become class indices; other labels pass through."""
    if isinstance(label, torch.Tensor) and label.ndim == 2 and label.shape[1] > 1:
        return label.argmax(dim=1)
    return label


def _check_counts(counts: Sequence[float] | None, num_groups: int, needed_for: str) -> torch.Tensor:
    if counts is None:
        raise ValueError(f"counts (samples per group in the training set) is required for {needed_for}.")
    counts_t = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    if counts_t.numel() != num_groups or (counts_t < 0).any() or counts_t.sum() <= 0:
        raise ValueError(
            f"counts must be {num_groups} non-negative numbers with a positive total, got {list(counts)}."
        )
    return counts_t


class _BatchGroupLoss(nn.Module):
    """Holds the group ids of the current batch (set by :meth:`set_batch`)."""

    def __init__(self, num_groups: int, label_key: str, bias_key: str) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be a positive integer, got {num_groups}.")
        self.num_groups = int(num_groups)
        self.label_key = label_key
        self.bias_key = bias_key
        self._groups: torch.Tensor | None = None

    def set_batch(self, batch: Mapping) -> None:
        """Compute the group of every sample of ``batch`` as ``2 * label + bias``.

        Args:
            batch: collated batch dictionary holding ``label_key`` (indices, ``(B, 1)`` or one-hot)
                and ``bias_key`` (0/1 per sample).

        Raises:
            ValueError: when ``batch`` is not a dictionary, a key is missing, or values are not 0/1.
        """
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"batch must be a dictionary with keys {self.label_key!r} and {self.bias_key!r}, "
                f"got {type(batch).__name__}."
            )
        for key in (self.label_key, self.bias_key):
            if key not in batch:
                raise ValueError(
                    f"batch has no key {key!r} (keys: {sorted(map(str, batch))}); the group-aware loss needs "
                    f"label_key={self.label_key!r} and bias_key={self.bias_key!r}."
                )
        groups = group_index(_class_index(batch[self.label_key]), batch[self.bias_key])
        self._groups = torch.as_tensor(groups, dtype=torch.long).reshape(-1)

    def _groups_for(self, pred: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        if groups is None:
            groups = self._groups
        if groups is None:
            raise RuntimeError(
                f"{type(self).__name__} has no groups: call set_batch(batch) before the loss "
                "(attach pipeline.mitigation.BatchContextHandler(loss) to the trainer) or pass groups=."
            )
        groups = torch.as_tensor(groups, dtype=torch.long, device=pred.device).reshape(-1)
        if groups.shape[0] != pred.shape[0]:
            raise ValueError(f"groups has {groups.shape[0]} entries but pred has batch size {pred.shape[0]}.")
        if groups.numel() and (groups.min() < 0 or groups.max() >= self.num_groups):
            raise ValueError(f"group ids must lie in [0, {self.num_groups}), got {groups.tolist()[:8]}.")
        return groups


class GroupReweightedLoss(_BatchGroupLoss):
    """Cross-entropy with a fixed weight per group: ``mean_i(w[g_i] * CE_i)``.

    Args:
        num_groups: number of groups (4 for ``2 * label + bias``).
        weights: ``None`` (all 1: plain cross-entropy), ``"inverse_frequency"`` (``N / (G' * n_g)``
            from ``counts``, where ``G'`` counts the non-empty groups, so the mean weight over the
            training set is 1; empty groups get 0), or one non-negative weight per group.
        counts: samples per group in the training set (after injection), needed for
            ``"inverse_frequency"``; see :func:`pipeline.mitigation.group_counts`.
        label_key: batch key of the class label.
        bias_key: batch key of the artifact flag.

    Raises:
        ValueError: for an unknown ``weights`` string, wrong lengths, negative values or
            missing ``counts``.
    """

    def __init__(
        self,
        num_groups: int = NUM_GROUPS,
        weights: str | Sequence[float] | None = None,
        counts: Sequence[float] | None = None,
        label_key: str = "label",
        bias_key: str = "bias",
    ) -> None:
        super().__init__(num_groups, label_key, bias_key)
        if weights is None:
            w = torch.ones(self.num_groups, dtype=torch.float64)
        elif isinstance(weights, str):
            if weights != "inverse_frequency":
                raise ValueError(f"weights must be None, 'inverse_frequency' or a sequence, got {weights!r}.")
            n = _check_counts(counts, self.num_groups, "weights='inverse_frequency'")
            nonempty = n > 0
            w = torch.zeros_like(n)
            w[nonempty] = n.sum() / (nonempty.sum() * n[nonempty])
        else:
            w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
            if w.numel() != self.num_groups or (w < 0).any() or not torch.isfinite(w).all():
                raise ValueError(
                    f"weights must be {self.num_groups} finite non-negative numbers, got {list(weights)}."
                )
        self.register_buffer("group_weights", w.float())

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted mean cross-entropy.

        Args:
            pred: logits ``(B, C)``.
            target: ``(B,)``/``(B, 1)`` class indices or ``(B, C)`` one-hot/soft targets.
            groups: group ids ``(B,)``; default: those of the last :meth:`set_batch`.
        """
        groups = self._groups_for(pred, groups)
        weights = self.group_weights.to(pred.device)[groups]
        return (per_sample_cross_entropy(pred, target) * weights).mean()


class GroupDROLoss(_BatchGroupLoss):
    """Online group DRO (Sagawa et al., ICLR 2020): minimise the weighted sum of group losses.

    Per batch: ``L_g`` = mean cross-entropy of the samples of group ``g``; for the groups present,
    ``q_g <- q_g * exp(eta * (L_g + C_g / sqrt(n_g)))`` renormalised so the present groups keep
    their total mass (absent groups keep their weight exactly); loss ``= sum_g q_g * L_g``
    (absent groups contribute 0). ``q`` is the buffer ``group_weights``, saved in the state
    dict: put the loss in the checkpoint's ``save_dict`` to resume. ``q`` is updated only in
    training mode (``loss.train()``, the default).

    Args:
        num_groups: number of groups (4 for ``2 * label + bias``).
        eta: step size of the exponentiated-gradient update of ``q`` (positive).
        adjustment: generalisation adjustment ``C`` (one number or one per group, non-negative);
            needs ``counts``. 0 disables it.
        counts: samples per group in the training set; groups with count 0 start with weight 0.
        label_key: batch key of the class label.
        bias_key: batch key of the artifact flag.

    Raises:
        ValueError: for a non-positive ``eta``, negative ``adjustment``, wrong lengths, or an
            adjustment without ``counts``.
    """

    def __init__(
        self,
        num_groups: int = NUM_GROUPS,
        eta: float = 0.01,
        adjustment: float | Sequence[float] = 0.0,
        counts: Sequence[float] | None = None,
        label_key: str = "label",
        bias_key: str = "bias",
    ) -> None:
        super().__init__(num_groups, label_key, bias_key)
        if not eta > 0:
            raise ValueError(f"eta must be positive, got {eta}.")
        self.eta = float(eta)
        adj = torch.as_tensor(adjustment, dtype=torch.float64).reshape(-1)
        if adj.numel() == 1:
            adj = adj.expand(self.num_groups).clone()
        if adj.numel() != self.num_groups or (adj < 0).any():
            raise ValueError(
                f"adjustment must be a non-negative number or {self.num_groups} of them, got {adjustment}."
            )
        q = torch.ones(self.num_groups, dtype=torch.float64)
        penalty = torch.zeros(self.num_groups, dtype=torch.float64)
        if counts is not None or (adj > 0).any():
            n = _check_counts(counts, self.num_groups, "adjustment > 0")
            q = (n > 0).double()
            penalty[n > 0] = adj[n > 0] / n[n > 0].sqrt()
        self.register_buffer("group_weights", (q / q.sum()).float())
        self.register_buffer("adjustment_penalty", penalty.float())

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Update ``q`` from this batch's group losses (training mode) and return ``sum_g q_g L_g``.

        Args:
            pred: logits ``(B, C)``.
            target: ``(B,)``/``(B, 1)`` class indices or ``(B, C)`` one-hot/soft targets.
            groups: group ids ``(B,)``; default: those of the last :meth:`set_batch`.
        """
        groups = self._groups_for(pred, groups)
        losses = per_sample_cross_entropy(pred, target)
        member = F.one_hot(groups, self.num_groups).to(losses.dtype)  # (B, G)
        group_sizes = member.sum(dim=0)
        # elementwise product + sum (not a matmul) keeps float32 under autocast
        group_losses = (member * losses[:, None]).sum(dim=0) / group_sizes.clamp(min=1)
        if self.group_weights.device != pred.device:
            self.group_weights = self.group_weights.to(pred.device)
            self.adjustment_penalty = self.adjustment_penalty.to(pred.device)
        if self.training:
            self._update_weights(group_losses.detach().float(), group_sizes > 0)
        return (self.group_weights.to(losses.dtype) * group_losses).sum()

    @torch.no_grad()
    def _update_weights(self, group_losses: torch.Tensor, present: torch.Tensor) -> None:
        q = self.group_weights
        mass = q[present].sum()
        if not present.any() or mass <= 0:
            return
        logits = q[present].log() + self.eta * (group_losses[present] + self.adjustment_penalty[present])
        new_q = q.clone()
        new_q[present] = mass * torch.softmax(logits, dim=0)
        self.group_weights.copy_(new_q)
