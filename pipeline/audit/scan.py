"""Counterfactual pairs in batches: how much an artifact, added to every image, moves a model.

An artifact is added to each preprocessed image by :class:`pipeline.transforms.ShortcutInjection`
in mode "always" (its random parts seeded from the sample id and the injection seed, as the
experiment's counterfactual test set does), the model runs on batches of the pairs, and the
protocol's functions give the numbers: :func:`pipeline.evaluation.protocol.flip_rate` over the
pair of prediction tables, TPR/FPR (:mod:`pipeline.evaluation.metrics`) with and without.
:func:`scan` ranks every candidate of :mod:`pipeline.audit.candidates` by its flip rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, Randomizable
from scipy.stats import binomtest
from torch import nn
from tqdm import tqdm

from pipeline.audit.candidates import Candidate, describe
from pipeline.audit.control import (
    Control,
    HeadControl,
    capture_head,
    excess_effect,
    feature_displacement,
    feature_spread,
    finding_separation,
    per_displacement,
)
from pipeline.audit.data import UNLABELLED, AuditImages, subsample
from pipeline.evaluation.metrics import false_positive_rate, true_positive_rate
from pipeline.evaluation.protocol import flip_rate
from pipeline.transforms import ShortcutInjection

THRESHOLD = 0.5
"""Class-1 probability from which the prediction is 1, as in the evaluation's prediction files."""


def is_random(artifact) -> bool:
    """True when ``artifact`` (a built transform) draws random parts: noise, a bias field, a random position."""
    transform = getattr(artifact, "transform", None)
    return isinstance(transform, Randomizable) or getattr(artifact, "position", None) == "random"


def add_artifact(images: torch.Tensor, ids: Sequence[str], artifact: Mapping, seed: int = 0) -> torch.Tensor:
    """``images`` with ``artifact`` (a transform config) added to each.

    A random artifact goes through :meth:`pipeline.transforms.ShortcutInjection.add_artifact`
    (its random parts seeded from the sample id and ``seed``, as in the experiment's
    counterfactual test set); a deterministic one is applied directly (the same result, without
    re-seeding per image).

    Raises:
        ValueError: the config does not build a transform (:func:`pipeline.transforms.build_artifact`)
            or the artifact does not fit the images.
    """
    injection = ShortcutInjection(dict(artifact), mode="always", seed=seed)
    if is_random(injection.artifact):
        changed = [injection.add_artifact(image, sample) for image, sample in zip(images, ids)]
    else:
        changed = [injection.artifact(image) for image in images]
    return torch.stack([torch.as_tensor(image) for image in changed])


def forward(
    network: nn.Module, images: torch.Tensor, finishing: Sequence = (), batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """(probability of class 1 (softmax of the logits), float64 log-odds of class 1 (logit 1 minus
    logit 0, unclipped)), each (N,), for preprocessed ``images`` in batches; ``finishing`` (the
    dictionary transforms after the injection point) is applied per image first."""
    finish = Compose(list(finishing)) if finishing else None
    probs, odds = [], []
    network.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if finish is not None:
                batch = torch.stack([torch.as_tensor(finish({"image": x})["image"]) for x in batch])
            logits = network(batch.as_subclass(torch.Tensor).float()).float().cpu()
            probs.append(torch.softmax(logits, dim=1)[:, 1])
            odds.append(logits[:, 1].double() - logits[:, 0].double())
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(odds).numpy()


def predict(network: nn.Module, images: torch.Tensor, finishing: Sequence = (), batch_size: int = 128) -> np.ndarray:
    """(N,) probability of class 1 (:func:`forward`)."""
    return forward(network, images, finishing, batch_size)[0]


def predict_log_odds(
    network: nn.Module, images: torch.Tensor, finishing: Sequence = (), batch_size: int = 128
) -> np.ndarray:
    """(N,) log-odds of class 1 (:func:`forward`); the audit's controls compare shifts in these
    (:func:`pipeline.audit.control.excess_effect`)."""
    return forward(network, images, finishing, batch_size)[1]


def prediction_table(ids: Sequence[str], labels: np.ndarray, probs: np.ndarray, bias: int) -> pd.DataFrame:
    """A prediction file's table (``id``, ``label``, ``bias``, ``prob``, ``pred``) for the protocol.

    Unlabelled items get label 0: the flip rate reads only the predictions.
    """
    return pd.DataFrame({
        "id": list(ids), "label": np.where(labels == UNLABELLED, 0, labels), "bias": bias,
        "prob": probs, "pred": (probs >= THRESHOLD).astype(int),
    })  # fmt: skip


def flip_interval(rate: float, n: int) -> list[float]:
    """95% Wilson interval of a flip rate over ``n`` counterfactual pairs."""
    interval = binomtest(int(round(rate * n)), n).proportion_ci(0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def pair_effect(
    ids: Sequence[str], labels: np.ndarray, without: np.ndarray, with_artifact: np.ndarray
) -> dict:
    """The numbers of one counterfactual pair set: ``flip_rate`` (with its 95% CI), ``delta_tpr``
    and ``delta_fpr`` (with minus without; None without labelled positives / negatives),
    ``mean_prob_shift`` (mean change of the class-1 probability) and ``prob_shift_by_class``
    (per true class; empty without labels)."""
    rate = flip_rate(
        prediction_table(ids, labels, with_artifact, 1), prediction_table(ids, labels, without, 0), THRESHOLD
    )
    known = labels != UNLABELLED
    y = labels[known]
    pred_with, pred_without = (
        (with_artifact[known] >= THRESHOLD).astype(int),
        (without[known] >= THRESHOLD).astype(int),
    )

    def rate_gap(rate_of, cls: int):
        return float(rate_of(y, pred_with) - rate_of(y, pred_without)) if (y == cls).any() else None

    shift = with_artifact - without
    return {
        "flip_rate": rate,
        "flip_rate_ci": flip_interval(rate, len(ids)),
        "delta_tpr": rate_gap(true_positive_rate, 1),
        "delta_fpr": rate_gap(false_positive_rate, 0),
        "mean_prob_shift": float(shift.mean()),
        "prob_shift_by_class": {
            str(c): float(shift[labels == c].mean()) for c in (0, 1) if (labels == c).any()
        },
    }


def change_rms(originals: torch.Tensor, changed: torch.Tensor) -> float:
    """How much a candidate changes the images: the root-mean-square pixel change of each image
    (in the preprocessed intensities the network reads), averaged over the images."""
    difference = (changed.float() - originals.float()).flatten(1)
    return float(difference.pow(2).mean(dim=1).sqrt().mean())


def scan(
    network: nn.Module,
    data: AuditImages,
    candidates: Sequence[Candidate],
    finishing: Sequence = (),
    seed: int = 0,
    screen_images: int | None = 200,
    confirm: int = 8,
    batch_size: int = 128,
    progress: bool = True,
    control: Control | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Every candidate's :func:`pair_effect`, sorted by flip rate (then |prob shift|), descending.

    Two passes keep the cost down: every candidate is screened on a seeded sub-sample of
    ``screen_images`` images, then the ``confirm`` candidates that flipped most (and, with a
    ``control``, the ``confirm`` of largest excess) are measured again on every image. Each entry
    records ``n`` (its pairs) and the flip rate's 95% CI; with a ``control``
    (:mod:`pipeline.audit.control`) also its :func:`pipeline.audit.control.excess_effect`, and
    with a head control on ``network`` how far the candidate moves the head features
    (``feature_displacement``, :func:`pipeline.audit.control.feature_displacement`) and
    ``excess_per_displacement`` (``excess_shift`` over it, where there is an ``excess_shift``).

    Returns:
        (entries: :func:`pipeline.audit.candidates.describe` + :func:`pair_effect` + ``n`` and
        :func:`change_rms` per candidate, the class-1 probabilities of every image without any artifact).
    """
    everything = np.arange(len(data.ids))

    def run(images: torch.Tensor, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, torch.Tensor | None]:
        """The model's class-1 probabilities and log-odds, the control's log-odds (None without
        one) and, with a head control, the head features it read in the same forward pass (else None)."""
        if isinstance(control, HeadControl) and control.network is network:
            with capture_head(network) as captured:
                probs, odds = forward(network, images, finishing, batch_size)
            features = torch.cat(captured).double()
            return probs, odds, control.predict_features(features, index), features
        probs, odds = forward(network, images, finishing, batch_size)
        return probs, odds, None if control is None else control.predict(images, index), None

    without, odds_without, control_without, features_without = run(data.images, everything)
    spread = None if features_without is None else feature_spread(features_without)
    known = data.labels != UNLABELLED
    separations = (finding_separation(data.labels[known], odds_without[known]), control and control.separation)
    screened = subsample(len(data.ids), screen_images, seed)

    def measure(candidate: Candidate, index: np.ndarray) -> dict:
        ids = [data.ids[i] for i in index]
        originals = data.images[torch.as_tensor(index)]
        images = add_artifact(originals, ids, candidate.artifact, seed)
        with_artifact, odds_with, control_with, features_with = run(images, index)
        entry = {
            **describe(candidate),
            "n": len(index),
            **pair_effect(ids, data.labels[index], without[index], with_artifact),
            "change_rms": change_rms(originals, images),
        }
        if control is not None:
            entry.update(excess_effect(odds_without[index], odds_with, control_without[index], control_with, separations))
        if features_with is not None:
            displacement = feature_displacement(features_without[torch.as_tensor(index)], features_with, spread)
            entry["feature_displacement"] = displacement
            if entry.get("excess_shift") is not None:
                entry["excess_per_displacement"] = per_displacement(entry["excess_shift"], displacement)
        return entry

    entries = [
        measure(c, screened)
        for c in tqdm(candidates, desc="screening candidates", unit="candidate", disable=not progress)
    ]
    if len(screened) < len(everything) and confirm > 0:
        by_name = {c.name: c for c in candidates}
        ranked = sorted(
            range(len(entries)), key=lambda i: (-entries[i]["flip_rate"], -abs(entries[i]["mean_prob_shift"]))
        )
        chosen = ranked[:confirm]
        if control is not None:
            by_excess = sorted(range(len(entries)), key=lambda i: (-entries[i]["excess_flip_rate"], entries[i]["name"]))
            chosen += [i for i in by_excess[:confirm] if i not in chosen]
        for i in tqdm(
            chosen, desc="confirming the top candidates", unit="candidate", disable=not progress
        ):
            entries[i] = measure(by_name[entries[i]["name"]], everything)
    entries.sort(key=lambda e: (-e["flip_rate"], -abs(e["mean_prob_shift"]), e["name"]))
    return with_region_excess(entries), without


def with_region_excess(entries: Sequence[Mapping]) -> list[dict]:
    """``entries`` with ``region_excess``: a localized candidate's flip rate minus the median flip
    rate of the same mark (family and parameters) over every region it was placed in; None for a
    diffuse candidate. A mark that moves the model in one region only (a shortcut's place) stands
    out; one that moves it anywhere (as a finding-like blob or a saturating change does) does not."""
    groups: dict[tuple, list[float]] = {}
    key = lambda e: (e.get("family"), repr(sorted(e["params"].items())))  # noqa: E731
    for e in entries:
        if e["kind"] == "localized":
            groups.setdefault(key(e), []).append(e["flip_rate"])
    return [
        {**e, "region_excess": float(e["flip_rate"] - np.median(groups[key(e)])) if e["kind"] == "localized" else None}
        for e in entries
    ]
