"""Results per bias type, for data whose items name the kind of bias they carry (SimBA's
multi-bias data: ``bias_type`` ``both``, ``intensity``, ``shape`` or ``none``, from
``python -m data_prep simba``).

The test role's predictions are split by type; each biased type is compared with the bias-free
items (``none``): its TPR and FPR minus theirs (ΔTPR, ΔFPR), as the in-distribution ΔTPR compares
all biased items with the bias-free ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.evaluation.metrics import UndefinedMetricWarning, auc, rates_by_group
from pipeline.evaluation.prediction_file import predicted_labels, validate_predictions

TYPE_KEY = "bias_type"
NO_BIAS = "none"
COLUMNS = ("bias_type", "n", "n_positive", "n_negative", "auc", "accuracy", "tpr", "fpr", "delta_tpr", "delta_fpr")


def item_types(items: Sequence[Mapping]) -> dict[str, str]:
    """``{id: bias type}`` of the items that name one (empty when none does)."""
    return {str(item["id"]): str(item[TYPE_KEY]) for item in items if item.get(TYPE_KEY) is not None}


def results_by_bias_type(predictions: pd.DataFrame, types: Mapping[str, str], threshold: float = 0.5) -> pd.DataFrame:
    """One row per bias type (:data:`COLUMNS`; ``none`` first) of the predictions whose id has a type.

    AUC is NaN for a type with one class only; ΔTPR/ΔFPR are NaN for ``none`` and where either
    side lacks positives (negatives).

    Raises:
        ValueError: an invalid prediction table, or no prediction whose id has a bias type.
    """
    frame = validate_predictions(predictions)
    frame = frame[frame["id"].isin(list(types))].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"none of the {len(predictions)} predictions has an id with a {TYPE_KEY}")
    groups = frame["id"].map(types).to_numpy()
    rates = rates_by_group(frame["label"], predicted_labels(frame, threshold), groups)
    reference = rates.loc[NO_BIAS] if NO_BIAS in rates.index else None
    rows = []
    for name in sorted(rates.index, key=lambda t: (t != NO_BIAS, t)):
        member = groups == name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = auc(frame["label"][member], frame["prob"][member])
        row = {"bias_type": name, **rates.loc[name].to_dict(), "auc": value}
        compared = reference is not None and name != NO_BIAS
        row["delta_tpr"] = row["tpr"] - reference["tpr"] if compared else np.nan
        row["delta_fpr"] = row["fpr"] - reference["fpr"] if compared else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"n": int, "n_positive": int, "n_negative": int})
