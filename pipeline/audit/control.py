"""Controls for what the finding looks like: a reader of the audited images' own labels that
learnt nothing from the audited model's training data, cross-fitted.

A candidate that looks like the finding (a bright blob where an opacity appears, a dark cube where
tissue gives way) moves every model that reads the finding, shortcut or not. A control reads only
what the audited images' labels say, so a candidate's effect on the model beyond its effect on the
control is what the model reads beyond those labels: a shortcut learnt from its training data.
Two controls:

- ``head`` (:func:`fit_head_control`, the default): the audited network's own features (the input
  of its last linear layer) read by a new linear head, a logistic regression fitted on the audited
  images' labels. It reads the finding with the model's features, so a finding-like candidate moves
  both alike; a shortcut feature, constant in images without the shortcut, gets no weight.
- ``retrain`` (:func:`fit_retrained_control`): the audited network's architecture trained afresh on those
  images (a fifth held out to pick the epoch by AUC). Independent of the model's features, but
  it needs enough images to learn the finding.

Cross-fitting keeps a control honest: the labelled images are split into ``folds`` stratified,
seeded folds; control ``k`` is fitted on the other folds and predicts fold ``k`` only, so every
image is scored by a control that never saw it. If the audited images themselves carry the
shortcut (linked to their labels), a control learns it too and the comparison hides it: audit on
images where the suspected shortcut and the label are not linked (docs/audit.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Compose
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from pipeline.audit.data import UNLABELLED, AuditImages
from pipeline.evaluation.metrics import auc

CONTROLS = ("head", "retrain", "none")
"""The controls an audit can compare each candidate with (module docstring)."""
MIN_PER_CLASS = 10
"""Labelled images of each class below which no control is trained (too few to learn the finding)."""


@dataclass
class Control:
    """Cross-fitted controls: the control of fold ``k`` never saw the images of fold ``k``.

    Attributes:
        folds: (N,) the fold of each audited image (unlabelled images too: they are only predicted).
        kind: ``head`` or ``retrain`` (module docstring).
        auc: the cross-fitted AUC of the controls on the labelled images, without any candidate.
        separation: their :func:`finding_separation` on those images.
        settings: how the controls were fitted (for the report).
    """

    folds: np.ndarray
    kind: str = ""
    auc: float | None = None
    separation: float | None = None
    settings: dict = field(default_factory=dict)

    def predict_fold(self, fold: int, images: torch.Tensor) -> np.ndarray:
        """Log-odds of class 1 of ``images`` by the control of ``fold``."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor, index: np.ndarray) -> np.ndarray:
        """(len(index),) log-odds of class 1 of ``images`` (the audited images at positions
        ``index``, possibly changed), each from the control of its fold."""
        out = np.empty(len(index), dtype=np.float64)
        for k in range(int(self.folds.max()) + 1 if self.folds.size else 0):
            rows = np.flatnonzero(self.folds[np.asarray(index)] == k)
            if rows.size:
                out[rows] = self.predict_fold(k, images[torch.as_tensor(rows)])
        return out

    def score(self, labels: np.ndarray, images: torch.Tensor) -> None:
        """Set :attr:`auc` and :attr:`separation` from the cross-fitted predictions of the labelled images."""
        index = np.flatnonzero(labels != UNLABELLED)
        predicted = self.predict(images[torch.as_tensor(index)], index)
        self.auc = auc(labels[index], rankdata(predicted) / predicted.size)  # the AUC reads only the order
        self.separation = finding_separation(labels[index], predicted)


@dataclass
class RetrainedControl(Control):
    """``retrain``: ``networks[k]``, the audited architecture trained afresh without fold ``k``."""

    networks: list = field(default_factory=list)
    finishing: list = field(default_factory=list)

    def predict_fold(self, fold: int, images: torch.Tensor) -> np.ndarray:
        from pipeline.audit.scan import predict_log_odds

        return predict_log_odds(self.networks[fold], images, self.finishing)


@dataclass
class HeadControl(Control):
    """``head``: ``probes[k]``, a logistic regression on the audited network's head features,
    fitted without fold ``k``."""

    network: nn.Module | None = None
    probes: list = field(default_factory=list)
    finishing: list = field(default_factory=list)

    def predict_fold(self, fold: int, images: torch.Tensor) -> np.ndarray:
        return self.read(fold, head_features(self.network, images, self.finishing))

    def read(self, fold: int, features: torch.Tensor) -> np.ndarray:
        """Log-odds of class 1 by the probe of ``fold`` on head ``features``."""
        logits = self.probes[fold].logits(features)
        return (logits[:, 1] - logits[:, 0]).numpy().astype(np.float64)

    def predict_features(self, features: torch.Tensor, index: np.ndarray) -> np.ndarray:
        """As :meth:`predict`, from head features the scan captured while the model ran
        (:func:`capture_head`): the model runs once for both."""
        out = np.empty(len(index), dtype=np.float64)
        for k in range(len(self.probes)):
            rows = np.flatnonzero(self.folds[np.asarray(index)] == k)
            if rows.size:
                out[rows] = self.read(k, features[torch.as_tensor(rows)])
        return out


def output_layer(network: nn.Module) -> nn.Linear | None:
    """The network's last linear layer when it gives the two class logits (None otherwise)."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears and linears[-1].out_features == 2 else None


@contextmanager
def capture_head(network: nn.Module):
    """Within the block, every forward of ``network`` appends the (batch, F) input of its
    :func:`output_layer` to the yielded list.

    Raises:
        ValueError: the network has no such layer.
    """
    layer = output_layer(network)
    if layer is None:
        raise ValueError("the network has no last linear layer with two outputs to read its features from")
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach().flatten(1).cpu()))
    try:
        yield captured
    finally:
        handle.remove()


def head_features(network: nn.Module, images: torch.Tensor, finishing: Sequence = (), batch_size: int = 128) -> torch.Tensor:
    """(N, F) float64: the input of :func:`output_layer` for each image (``finishing`` applied first)."""
    from pipeline.audit.scan import predict_log_odds

    with capture_head(network) as captured:
        predict_log_odds(network, images, finishing, batch_size)
    return torch.cat(captured).double()


def feature_spread(features: torch.Tensor) -> float:
    """How far apart the images' head features lie: the root-mean-square distance of each (N, F)
    feature vector to their mean (0 for identical features)."""
    centred = features.double() - features.double().mean(dim=0)
    return float(centred.pow(2).sum(dim=1).mean().sqrt())


def feature_displacement(without: torch.Tensor, with_candidate: torch.Tensor, spread: float) -> float:
    """How far a candidate moves the head features, in units of their spread over the clean images
    (:func:`feature_spread`): the mean distance between each image's features with and without it,
    divided by ``spread``. A shortcut moves the model far for a small displacement of its features;
    a change that takes the images far from the ones the control was fitted on moves them far."""
    distance = float((with_candidate.double() - without.double()).norm(dim=1).mean())
    return distance / spread if spread > 0 else float("inf") if distance > 0 else 0.0


def per_displacement(excess: float, displacement: float) -> float:
    """``excess`` per unit of feature ``displacement`` (the displacement floored at 1e-12: a
    candidate that leaves the features where they were and still moves the model has an unbounded ratio)."""
    return excess / max(displacement, 1e-12)


def fresh_copy(network: nn.Module, seed: int) -> nn.Module:
    """The same architecture with new weights: a deep copy whose every ``reset_parameters`` is
    called under ``seed`` (batch-norm running statistics are reset too)."""
    twin = copy.deepcopy(network).cpu()
    torch.manual_seed(seed)
    for module in twin.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return twin


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold of each item: the items of each class (labelled 0, 1, and unlabelled) dealt in
    turn to the folds in a seeded order, so each fold has the same share of every class."""
    rng = np.random.default_rng(seed)
    assigned = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        assigned[members] = (np.arange(members.size) + int(rng.integers(folds))) % folds
    return assigned


def _finished(images: torch.Tensor, finishing: Sequence) -> torch.Tensor:
    if not finishing:
        return images.as_subclass(torch.Tensor).float()
    finish = Compose(list(finishing))
    return torch.stack([torch.as_tensor(finish({"image": x})["image"]) for x in images]).as_subclass(torch.Tensor).float()


def train_control(
    network: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> tuple[nn.Module, float]:
    """A fresh copy of ``network`` trained on ``images`` (already finished) with Adam and
    cross-entropy; a seeded, stratified fifth is held out and the epoch of best held-out AUC is
    kept. Returns (the network in eval mode, that AUC)."""
    model = fresh_copy(network, seed)
    held_out = assign_folds(labels, 5, seed) == 0
    train_x, train_y = images[torch.as_tensor(~held_out)], torch.as_tensor(labels[~held_out])
    val_x, val_y = images[torch.as_tensor(held_out)], labels[held_out]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    best_auc, best_state = -1.0, copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if batch.numel() < 2:  # batch norm needs two samples
                continue
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(val_x).float(), dim=1)[:, 1].numpy()
        score = auc(val_y, probs)
        if score > best_auc:
            best_auc, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), float(best_auc)


def too_few_labels(labels: np.ndarray, folds: int) -> str | None:
    """Why no control can be fitted on ``labels`` (too few of a class), or None."""
    counts = {cls: int((labels == cls).sum()) for cls in (0, 1)}
    if min(counts.values()) >= MIN_PER_CLASS * folds:
        return None
    return (
        f"no control: it needs {MIN_PER_CLASS * folds} labelled images of each class "
        f"({MIN_PER_CLASS} per fold), the images have {counts[0]} of class 0 and {counts[1]} of class 1"
    )


def fit_head_control(
    network: nn.Module, data: AuditImages, finishing: Sequence = (), folds: int = 2, seed: int = 0, l2: float = 1e-2,
) -> tuple[Control | None, str | None]:  # fmt: skip
    """The ``head`` control: per fold, :func:`pipeline.evaluation.linear_probes.fit_linear_probe`
    (standardised logistic regression, ridge ``l2``) on the head features of the other folds'
    labelled images.

    Returns:
        (the :class:`HeadControl`, None), or (None, why not: too few labelled images of a class,
        or no linear output layer to read the features of).
    """
    from pipeline.evaluation.linear_probes import fit_linear_probe

    labels = data.labels
    reason = too_few_labels(labels, folds)
    if reason:
        return None, reason
    if output_layer(network) is None:
        return None, "no control: the network has no last linear layer with two outputs (the head control reads its input)"
    assigned = assign_folds(labels, folds, seed)
    features = head_features(network, data.images, finishing)
    probes = []
    for k in range(folds):
        train = np.flatnonzero((assigned != k) & (labels != UNLABELLED))
        probes.append(fit_linear_probe(features[torch.as_tensor(train)], labels[train], l2=l2))
    control = HeadControl(assigned, "head", network=network, probes=probes, finishing=list(finishing))
    control.score(labels, data.images)
    control.settings = {"folds": folds, "seed": seed, "l2": l2, "features": "the input of the network's last linear layer"}
    return control, None


def fit_retrained_control(
    network: nn.Module,
    data: AuditImages,
    finishing: Sequence = (),
    folds: int = 2,
    epochs: int = 30,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Control | None, str | None]:
    """The ``retrain`` control: one network per fold (module docstring), trained on ``data``'s
    labelled images.

    Returns:
        (the :class:`RetrainedControl`, None), or (None, why no control was trained: too few
        labelled images of a class).
    """
    labels = data.labels
    reason = too_few_labels(labels, folds)
    if reason:
        return None, reason
    assigned = assign_folds(labels, folds, seed)
    finished = _finished(data.images, finishing)
    networks, held_out_aucs = [], []
    for k in tqdm(range(folds), desc="training the control", unit="fold", disable=not progress):
        train = (assigned != k) & (labels != UNLABELLED)
        net, score = train_control(network, finished[torch.as_tensor(train)], labels[train], epochs,
                                   learning_rate, batch_size, seed + k)  # fmt: skip
        networks.append(net)
        held_out_aucs.append(score)
    control = RetrainedControl(assigned, "retrain", networks=networks, finishing=list(finishing))
    control.score(labels, data.images)
    control.settings = {
        "folds": folds, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
        "epoch_choice_auc": [round(a, 4) for a in held_out_aucs],
    }  # fmt: skip
    return control, None


def finding_separation(labels: np.ndarray, log_odds: np.ndarray) -> float | None:
    """How far a model's log-odds of class 1 set the labelled positives from the negatives: the
    mean over class 1 minus the mean over class 0 (the finding's worth in the model's own units);
    None when a class is missing or the model does not separate them."""
    if not ((labels == 0).any() and (labels == 1).any()):
        return None
    e = np.asarray(log_odds, dtype=np.float64)
    gap = float(e[labels == 1].mean() - e[labels == 0].mean())
    return gap if gap > 0 else None


def _paired_mean(difference: np.ndarray) -> tuple[float, list[float]]:
    """The mean of paired per-image differences and its 95% CI (normal approximation)."""
    mean = float(difference.mean())
    half = 1.96 * float(difference.std(ddof=1)) / np.sqrt(difference.size) if difference.size > 1 else float("nan")
    return mean, [mean - half, mean + half]


def excess_effect(
    without: np.ndarray,
    with_artifact: np.ndarray,
    control_without: np.ndarray,
    control_with: np.ndarray,
    separations: tuple[float | None, float | None] = (None, None),
) -> dict:
    """One candidate against the control, on the same images, from the log-odds of class 1
    (the logit difference, unclipped: a prediction is class 1 from log-odds 0) of the model and the
    control without and with the candidate.

    ``control_flip_rate``; ``excess_flip_rate`` (the model's flip rate minus the control's) and
    its 95% CI (``excess_flip_rate_ci``, over the paired per-image differences); with both
    ``separations`` (:func:`finding_separation` of the model and of the control), the shift of
    the log-odds in findings' worth (``shift_in_findings``, ``control_shift_in_findings``: the
    mean change of the log-odds divided by that reader's own separation of the classes) and
    ``excess_shift`` (with its CI): the part of the model's shift, in its direction, that the
    control's does not explain: the model's shift minus the control's where the control moves the
    same way, else the model's shift alone (a control moved the other way explains none of it, and
    the excess is never more than the model moved). A candidate that looks like the finding moves
    a weak and a strong reader of the finding alike in these units; a shortcut moves only the
    model that learnt it.
    """
    flips = lambda a, b: ((a >= 0) != (b >= 0)).astype(np.float64)  # noqa: E731
    mean, interval = _paired_mean(flips(with_artifact, without) - flips(control_with, control_without))
    effect = {
        "control_flip_rate": float(flips(control_with, control_without).mean()),
        "excess_flip_rate": mean,
        "excess_flip_rate_ci": interval,
    }
    model_gap, control_gap = separations
    if model_gap and control_gap:
        model_shift = (np.asarray(with_artifact, np.float64) - without) / model_gap
        control_shift = (np.asarray(control_with, np.float64) - control_without) / control_gap
        direction = 1.0 if model_shift.mean() >= 0 else -1.0
        explained = control_shift if direction * control_shift.mean() > 0 else np.zeros_like(control_shift)
        excess, excess_interval = _paired_mean(direction * (model_shift - explained))
        effect.update({
            "shift_in_findings": float(model_shift.mean()),
            "control_shift_in_findings": float(control_shift.mean()),
            "excess_shift": excess,
            "excess_shift_ci": excess_interval,
        })  # fmt: skip
    return effect
