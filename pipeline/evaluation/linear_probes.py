"""Linear probes on pooled stage features: scikit-learn logistic regression, scored by AUC.

A probe per stage and 0/1 target (the bias flag, the class label), fitted on one set and scored
on another, says how well each stage encodes the artifact and the class. Features are
standardised (:class:`sklearn.preprocessing.StandardScaler`) and the probe is a
:class:`sklearn.linear_model.LogisticRegression` (L-BFGS, float64, deterministic: the objective
is convex), with ``C`` chosen so that it minimises mean cross-entropy + ``l2 / 2 * ||W||^2`` of a
softmax probe with one weight row per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.evaluation.layer_features import LayerFeatures
from pipeline.evaluation.metrics import auc
from pipeline.networks.arguments import check_positive_int

# columns of a per-stage analysis table (the layer table adds "model" in front)
STAGE_COLUMNS = ("stage", "stage_index", "metric", "value")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: standardisation + logistic regression (a scikit-learn pipeline)."""

    pipeline: Pipeline

    @property
    def weight(self) -> torch.Tensor:
        """Coefficients on the standardised features: (1, features) for two classes, else (classes, features)."""
        return torch.from_numpy(self.pipeline[-1].coef_)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) float64 logits of (N, features) pooled features (``[0, d]`` for two classes).

        Raises:
            ValueError: for a feature count other than the fitted one.
        """
        x = _matrix(features)
        expected = self.pipeline[0].n_features_in_
        if x.ndim != 2 or x.shape[1] != expected:
            raise ValueError(f"probe expects (N, {expected}) features, got {tuple(x.shape)}")
        scores = torch.from_numpy(self.pipeline.decision_function(x))
        return torch.stack([torch.zeros_like(scores), scores], dim=1) if scores.ndim == 1 else scores

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) class probabilities (softmax of :meth:`logits`)."""
        return self.logits(features).softmax(dim=1)


def _matrix(features) -> np.ndarray:
    return torch.as_tensor(features).detach().to("cpu", torch.float64).numpy()


def fit_linear_probe(features: torch.Tensor, target, l2: float = 1e-2, max_iter: int = 200) -> LinearProbe:
    """Fit a logistic-regression probe: mean cross-entropy + ``l2 / 2 * ||W||^2`` (softmax weights).

    Args:
        features: (N, C) pooled features.
        target: N class indices; at least two classes must be present.
        l2: ridge penalty on the weights (>= 0; > 0 keeps separable data finite).
        max_iter: L-BFGS iterations.

    Raises:
        ValueError: for bad shapes, a single class, a negative ``l2`` or a non-positive ``max_iter``.
    """
    x = _matrix(features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, C) tensor, got shape {tuple(x.shape)}")
    y = torch.as_tensor(target).detach().to("cpu").reshape(-1).long().numpy()
    if y.size != x.shape[0] or int(y.min()) < 0:
        raise ValueError(f"target must hold {x.shape[0]} non-negative class indices, got {y.size} values")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"target has the single class {classes.tolist()}; a probe needs at least two classes")
    if isinstance(l2, bool) or not (isinstance(l2, (int, float)) and l2 >= 0):
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    check_positive_int(max_iter, "max_iter")
    # scikit-learn minimises C * sum(CE) + ||W||^2 / 2. Two classes have one weight vector, the
    # difference of the two softmax rows (each half of it at the optimum): C = 2 / (l2 * N);
    # more classes have one row per class: C = 1 / (l2 * N).
    penalty = {"C": (2.0 if classes.size == 2 else 1.0) / (l2 * x.shape[0])} if l2 > 0 else {"penalty": None}
    model = LogisticRegression(**penalty, solver="lbfgs", tol=1e-10, max_iter=max_iter)
    return LinearProbe(make_pipeline(StandardScaler(), model).fit(x, y))


def check_binary(features: LayerFeatures, key: str, where: str) -> None:
    """Raise ValueError unless the target ``key`` of ``features`` holds only 0/1 values."""
    values = torch.unique(features.targets[key]).tolist()
    if not set(values) <= {0, 1}:
        raise ValueError(f"{where}: probe target {key!r} must be 0/1 to be scored by AUC, found values {values[:5]}")


def probe_aucs(
    fit: LayerFeatures, evaluation: LayerFeatures, targets: Sequence[str], l2: float = 1e-2, max_iter: int = 200
) -> tuple[pd.DataFrame, dict[str, dict[str, LinearProbe]]]:
    """AUC of a probe per stage and 0/1 target, fitted on ``fit``, scored on ``evaluation``.

    Returns:
        The table (columns :data:`STAGE_COLUMNS`, metric ``probe_auc_<target>``; NaN with a
        warning where ``evaluation`` holds a single class) and the probes, target -> stage -> probe.

    Raises:
        ValueError: for a non-binary target or a target with one class in ``fit``.
    """
    rows, probes = [], {}
    for key in targets:
        check_binary(fit, key, "loader_fit")
        check_binary(evaluation, key, "loader_eval")
        probes[key] = {}
        for index, stage in enumerate(fit.stages):
            try:
                probe = fit_linear_probe(fit.pooled[stage], fit.targets[key], l2=l2, max_iter=max_iter)
            except ValueError as err:
                raise ValueError(f"loader_fit: cannot fit the {key!r} probe of stage {stage!r}: {err}") from err
            probes[key][stage] = probe
            score = auc(evaluation.targets[key].numpy(), probe.probabilities(evaluation.pooled[stage])[:, 1].numpy())
            rows.append({"stage": stage, "stage_index": index, "metric": f"probe_auc_{key}", "value": score})
    return pd.DataFrame(rows, columns=list(STAGE_COLUMNS)), probes
