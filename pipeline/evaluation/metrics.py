"""The metric library: shortcut-reliance metrics of labels, predictions and bias flags.

Every function takes arrays (the columns of a prediction file, :mod:`pipeline.evaluation.prediction_file`)
and is pure: inputs are never modified. Which metrics a test set gets, and on which files, is
the protocol's (:mod:`pipeline.evaluation.protocol`). AUC and calibration reuse :func:`monai.metrics.compute_roc_auc` and
:class:`monai.metrics.CalibrationErrorMetric`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from monai.metrics import CalibrationErrorMetric, compute_roc_auc

from pipeline.networks.arguments import check_positive_int


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for this data (e.g. a TPR for a group without positives) and is NaN."""


# ----------------------------------------------------------------------------- checks


def _binary_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        found = sorted({v.item() if hasattr(v, "item") else v for v in np.unique(arr)})[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found values {found}")
    return arr.astype(np.int64)


def _prob_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
        raise ValueError(f"{name} must contain numbers in [0, 1], found min {arr.min()} and max {arr.max()}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")


# ----------------------------------------------------------------------------- ranking


def auc(labels, probs) -> float:
    """Area under the ROC curve (``monai.metrics.compute_roc_auc``); NaN with a warning for one class.

    Raises:
        ValueError: labels not 0/1, probs not in [0, 1], or different lengths.
    """
    labels, probs = _binary_array("labels", labels), _prob_array("probs", probs)
    _same_length(labels=labels, probs=probs)
    if len(labels) == 0:
        raise ValueError("auc needs at least one row, got 0")
    if len(np.unique(labels)) < 2:
        warnings.warn(
            f"AUC is undefined when all {len(labels)} labels are {labels[:1].tolist()}; returning NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(compute_roc_auc(torch.tensor(probs, dtype=torch.float64), torch.tensor(labels)))


_BOOTSTRAP_CHUNK = 100


def resampled_aucs(labels, probs, index) -> np.ndarray:
    """AUC of many resamples at once: row ``r`` is the AUC of ``labels[index[r]], probs[index[r]]``.

    The same statistic as :func:`monai.metrics.compute_roc_auc` (ties count one half), computed
    from per-sample counts in one vectorised pass, because calling MONAI once per bootstrap
    resample is a Python loop over samples (about 50 ms per call for 5000 samples here).

    Args:
        labels: 0/1 ground truth of the original samples.
        probs: class-1 probabilities of the original samples.
        index: integer array (n_resamples, resample_size) of indices into ``labels``.

    Returns:
        One AUC per row; NaN for a row that holds only one class.

    Raises:
        ValueError: bad labels/probs, or ``index`` not a 2D array of valid indices.
    """
    labels, probs = _binary_array("labels", labels), _prob_array("probs", probs)
    _same_length(labels=labels, probs=probs)
    index = np.asarray(index)
    n = len(labels)
    valid = index.ndim == 2 and np.issubdtype(index.dtype, np.integer)
    if not valid or (index.size and not 0 <= index.min() <= index.max() < n):
        raise ValueError(f"index must be a 2D integer array of indices in [0, {n}), got shape {index.shape}")
    rows = index.shape[0]
    counts = np.bincount((index + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
    order = np.argsort(probs, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(probs[order])) + 1]  # one group per distinct score, ascending
    sorted_counts, sorted_labels = counts[:, order], labels[order]
    pos = np.add.reduceat(sorted_counts * sorted_labels, starts, axis=1).astype(float)
    neg = np.add.reduceat(sorted_counts * (1 - sorted_labels), starts, axis=1).astype(float)
    below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def auc_with_ci(
    labels, probs, n_boot: int = 1000, seed: int = 0, stratified: bool = True, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC with a percentile bootstrap confidence interval.

    The point estimate comes from :func:`auc`; the resamples from :func:`resampled_aucs`.

    Args:
        labels: 0/1 ground truth.
        probs: probability of class 1.
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling generator (same seed, same interval).
        stratified: resample positives and negatives separately (keeping their counts); if False,
            resample all rows together and skip resamples that contain only one class.
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(auc, low, high)``; all NaN (with a warning) when only one class is present.

    Raises:
        ValueError: bad labels/probs, ``n_boot`` not a positive integer or ``level`` not in (0, 1).
    """
    check_positive_int(n_boot, "n_boot")
    if not (isinstance(level, float) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    labels, probs = _binary_array("labels", labels), _prob_array("probs", probs)
    _same_length(labels=labels, probs=probs)
    point = auc(labels, probs)
    if np.isnan(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    values = []
    for start in range(0, n_boot, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_boot - start)
        if stratified:
            index = np.hstack(
                [rng.choice(positives, size=(size, len(positives))), rng.choice(negatives, size=(size, len(negatives)))]
            )
        else:
            index = rng.integers(0, len(labels), size=(size, len(labels)))
        chunk = resampled_aucs(labels, probs, index)
        values.extend(chunk[~np.isnan(chunk)])  # plain resamples with one class are skipped
    if not values:
        warnings.warn(
            f"all {n_boot} bootstrap resamples had one class; AUC interval is NaN", UndefinedMetricWarning, stacklevel=2
        )
        return point, float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(values), [tail, 1.0 - tail])
    return point, float(low), float(high)


def roc_curve(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points for plotting, one point per distinct threshold, from (0, 0) to (1, 1).

    Returns:
        ``(fpr, tpr)`` arrays; the trapezoid area under them equals :func:`auc`.

    Raises:
        ValueError: bad labels/probs, different lengths, or only one class present.
    """
    labels, probs = _binary_array("labels", labels), _prob_array("probs", probs)
    _same_length(labels=labels, probs=probs)
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_curve needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(-probs, kind="stable")
    sorted_probs, sorted_labels = probs[order], labels[order]
    # the last index of each run of tied scores is one threshold
    ends = np.r_[np.flatnonzero(np.diff(sorted_probs)), len(sorted_probs) - 1]
    true_pos = np.cumsum(sorted_labels)[ends]
    false_pos = (ends + 1) - true_pos
    return np.r_[0.0, false_pos / n_neg], np.r_[0.0, true_pos / n_pos]


# ----------------------------------------------------------------------------- thresholded


def accuracy(labels, preds) -> float:
    """Share of rows whose predicted class equals the label.

    Raises:
        ValueError: labels or preds not 0/1, different lengths, or empty.
    """
    labels, preds = _binary_array("labels", labels), _binary_array("preds", preds)
    _same_length(labels=labels, preds=preds)
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one row, got 0")
    return float(np.mean(labels == preds))


def _rate(labels: np.ndarray, preds: np.ndarray, positive_class: int) -> float:
    members = labels == positive_class
    if not members.any():
        return float("nan")
    return float(np.mean(preds[members] == 1))


def true_positive_rate(labels, preds) -> float:
    """TPR (sensitivity): share of label-1 rows predicted 1; NaN with a warning if there are none.

    Raises:
        ValueError: labels or preds not 0/1, or different lengths.
    """
    labels, preds = _binary_array("labels", labels), _binary_array("preds", preds)
    _same_length(labels=labels, preds=preds)
    if not (labels == 1).any():
        warnings.warn("TPR is undefined without positives (label=1); returning NaN", UndefinedMetricWarning, stacklevel=2)
    return _rate(labels, preds, 1)


def false_positive_rate(labels, preds) -> float:
    """FPR: share of label-0 rows predicted 1; NaN with a warning if there are none.

    Raises:
        ValueError: labels or preds not 0/1, or different lengths.
    """
    labels, preds = _binary_array("labels", labels), _binary_array("preds", preds)
    _same_length(labels=labels, preds=preds)
    if not (labels == 0).any():
        warnings.warn("FPR is undefined without negatives (label=0); returning NaN", UndefinedMetricWarning, stacklevel=2)
    return _rate(labels, preds, 0)


def rates_by_group(labels, preds, groups) -> pd.DataFrame:
    """Counts, TPR, FPR and accuracy per group (e.g. per ``bias`` value).

    Undefined rates (a group without positives or negatives) are NaN, without a warning.

    Returns:
        DataFrame indexed by the sorted group values with columns ``n``, ``n_positive``,
        ``n_negative``, ``tpr``, ``fpr``, ``accuracy``.

    Raises:
        ValueError: labels or preds not 0/1, or lengths differ.
    """
    labels, preds = _binary_array("labels", labels), _binary_array("preds", preds)
    groups = np.asarray(groups)
    _same_length(labels=labels, preds=preds, groups=groups)
    rows = {}
    for group in np.unique(groups):
        member = groups == group
        y, p = labels[member], preds[member]
        rows[group.item() if hasattr(group, "item") else group] = {
            "n": int(member.sum()),
            "n_positive": int(y.sum()),
            "n_negative": int(len(y) - y.sum()),
            "tpr": _rate(y, p, 1),
            "fpr": _rate(y, p, 0),
            "accuracy": float(np.mean(y == p)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _bias_gap(labels, preds, bias, positive_class: int, name: str) -> float:
    labels, preds, bias = _binary_array("labels", labels), _binary_array("preds", preds), _binary_array("bias", bias)
    _same_length(labels=labels, preds=preds, bias=bias)
    kind = "positives (label=1)" if positive_class == 1 else "negatives (label=0)"
    empty = [
        f"the {desc} group (bias={value})"
        for value, desc in ((1, "with-artifact"), (0, "without-artifact"))
        if not ((bias == value) & (labels == positive_class)).any()
    ]
    if empty:
        warnings.warn(
            f"{name} is undefined: {' and '.join(empty)} has no {kind}; returning NaN",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return float("nan")
    with_artifact = _rate(labels[bias == 1], preds[bias == 1], positive_class)
    without_artifact = _rate(labels[bias == 0], preds[bias == 0], positive_class)
    return with_artifact - without_artifact


def delta_tpr(labels, preds, bias) -> float:
    """TPR of the with-artifact group (bias=1) minus TPR of the without-artifact group (bias=0).

    Returns NaN with an :class:`UndefinedMetricWarning` naming the group without positives.

    Raises:
        ValueError: labels, preds or bias not 0/1, or lengths differ.
    """
    return _bias_gap(labels, preds, bias, 1, "delta_tpr")


def delta_fpr(labels, preds, bias) -> float:
    """FPR of the with-artifact group (bias=1) minus FPR of the without-artifact group (bias=0).

    Returns NaN with an :class:`UndefinedMetricWarning` naming the group without negatives.

    Raises:
        ValueError: labels, preds or bias not 0/1, or lengths differ.
    """
    return _bias_gap(labels, preds, bias, 0, "delta_fpr")


def group_accuracies(labels, preds, bias) -> dict[tuple[int, int], float]:
    """Accuracy of every non-empty (label, bias) group, keyed ``(label, bias)``.

    Raises:
        ValueError: labels, preds or bias not 0/1, or lengths differ.
    """
    labels, preds, bias = _binary_array("labels", labels), _binary_array("preds", preds), _binary_array("bias", bias)
    _same_length(labels=labels, preds=preds, bias=bias)
    result = {}
    for y in (0, 1):
        for b in (0, 1):
            member = (labels == y) & (bias == b)
            if member.any():
                result[(y, b)] = float(np.mean(preds[member] == y))
    return result


def worst_group_accuracy(labels, preds, bias) -> float:
    """Lowest accuracy over the non-empty groups label x bias.

    Raises:
        ValueError: labels, preds or bias not 0/1, lengths differ, or there are no rows.
    """
    accuracies = group_accuracies(labels, preds, bias)
    if not accuracies:
        raise ValueError("worst_group_accuracy needs at least one row, got 0")
    return min(accuracies.values())


def expected_calibration_error(labels, probs, n_bins: int = 10) -> float:
    """ECE of the class-1 probability over ``n_bins`` equal-width bins of [0, 1].

    The count-weighted mean over non-empty bins of |mean prob - share of label 1|
    (``monai.metrics.CalibrationErrorMetric`` with ``calibration_reduction="expected"``).

    Raises:
        ValueError: bad labels/probs, different lengths, or ``n_bins`` not a positive integer.
    """
    check_positive_int(n_bins, "n_bins")
    labels, probs = _binary_array("labels", labels), _prob_array("probs", probs)
    _same_length(labels=labels, probs=probs)
    metric = CalibrationErrorMetric(num_bins=n_bins, calibration_reduction="expected", metric_reduction="mean")
    # MONAI expects (batch, channel, spatial...): one batch item, one channel (class 1), N "voxels".
    y_pred = torch.tensor(probs, dtype=torch.float32).reshape(1, 1, -1)
    y = torch.tensor(labels, dtype=torch.float32).reshape(1, 1, -1)
    return float(metric(y_pred=y_pred, y=y).item())
