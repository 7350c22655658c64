"""Just Train Twice (Liu et al., ICML 2021): upweight the samples an early ERM model gets wrong.

Step 1 trains ERM for a few epochs and saves per-sample predictions; :func:`jtt_error_ids`
reads them; step 2 retrains on :func:`jtt_upsampled_datalist`. No bias labels are needed.
Ids are compared as strings, so ``7`` in a CSV matches ``"7"`` in a datalist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["jtt_error_ids", "jtt_upsampled_datalist", "jtt_upweight"]
BALANCED = "balanced"


def jtt_error_ids(
    predictions: str | os.PathLike | pd.DataFrame | Mapping[str, Sequence],
    threshold: float = 0.5,
    id_column: str = "id",
    label_column: str = "label",
    prob_column: str = "prob",
) -> list[str]:
    """Ids of the samples misclassified by the first-stage model (the JTT error set).

    A sample is predicted positive when ``prob >= threshold``.

    Args:
        predictions: CSV path, DataFrame, or mapping of equal-length arrays with the three columns.
        threshold: decision threshold on ``prob``, in (0, 1).
        id_column: column of sample ids (unique).
        label_column: column of true labels (0/1).
        prob_column: column of the predicted probability of class 1, in [0, 1].

    Raises:
        ValueError: for a missing column, duplicate ids, labels not 0/1, probabilities outside
            [0, 1] or missing, or ``threshold`` outside (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}.")
    if isinstance(predictions, (str, os.PathLike)):
        source = os.fspath(predictions)
        table = pd.read_csv(source, dtype={id_column: str})
    else:
        source = "predictions"
        table = pd.DataFrame(predictions)
    missing = [c for c in (id_column, label_column, prob_column) if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(table.columns)}.")
    ids = table[id_column].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"{source}: duplicate ids in {id_column!r}: {ids[ids.duplicated()].tolist()[:5]}.")
    labels = pd.to_numeric(table[label_column], errors="coerce").to_numpy(dtype=float)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{source}: {label_column!r} must hold 0/1, got {sorted(set(labels.tolist()))[:8]}.")
    probs = pd.to_numeric(table[prob_column], errors="coerce").to_numpy(dtype=float)
    if np.isnan(probs).any() or (probs < 0).any() or (probs > 1).any():
        raise ValueError(f"{source}: {prob_column!r} must hold probabilities in [0, 1] without gaps.")
    wrong = (probs >= threshold).astype(float) != labels
    return ids[wrong].tolist()


def _error_flags(items: Sequence[Mapping], error_ids: Iterable, id_key: str) -> list[bool]:
    item_ids = []
    for i, item in enumerate(items):
        if id_key not in item:
            raise ValueError(f"datalist item {i} has no key {id_key!r} (keys: {sorted(map(str, item))}).")
        item_ids.append(str(item[id_key]))
    duplicated = pd.Series(item_ids)[pd.Series(item_ids).duplicated()].tolist()
    if duplicated:
        raise ValueError(f"datalist ids under {id_key!r} must be unique, repeated: {duplicated[:5]}.")
    errors = {str(e) for e in error_ids}
    unknown = sorted(errors - set(item_ids))
    if unknown:
        raise ValueError(
            f"error_ids not in the datalist ({len(unknown)}): {unknown[:5]}; check id_key={id_key!r}."
        )
    return [i in errors for i in item_ids]


def jtt_upsampled_datalist(
    items: Sequence[Mapping], error_ids: Iterable, upweight: int, id_key: str = "id"
) -> list[dict]:
    """Datalist with every error-set item repeated ``upweight`` times (others once), order kept.

    Items are shallow-copied; the input list is not modified.

    Args:
        items: training datalist.
        error_ids: ids of the error set (from :func:`jtt_error_ids`).
        upweight: lambda_up, an integer >= 1.
        id_key: key of the sample id in each item.

    Raises:
        ValueError: for ``upweight`` < 1 or not an integer, a missing/duplicate id, or an error id
            absent from ``items``.
    """
    if isinstance(upweight, bool) or int(upweight) != upweight or upweight < 1:
        raise ValueError(f"upweight must be an integer >= 1, got {upweight}.")
    flags = _error_flags(items, error_ids, id_key)
    return [dict(item) for item, err in zip(items, flags) for _ in range(int(upweight) if err else 1)]



def jtt_upweight(setting: int | str, n_items: int, n_errors: int) -> int:
    """lambda_up from a setting: an integer as given, or ``"balanced"``: the error set, repeated,
    weighs as much as the rest of the training set (``round((n_items - n_errors) / n_errors)``, at
    least 1; 1 for an empty error set).

    Liu et al. tune lambda_up on the validation set's worst-group accuracy, which needs bias labels
    that JTT here may not use; balancing the two sets is the label-free rule in its place.

    Raises:
        ValueError: ``setting`` neither ``"balanced"`` nor an integer >= 1, or counts that do not fit.
    """
    if setting == BALANCED:
        if not 0 <= n_errors <= n_items:
            raise ValueError(f"jtt_upweight: {n_errors} errors among {n_items} items is impossible.")
        return 1 if n_errors == 0 else max(1, round((n_items - n_errors) / n_errors))
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or int(setting) != setting or setting < 1:
        raise ValueError(f"jtt_upweight must be an integer >= 1 or '{BALANCED}', got {setting!r}.")
    return int(setting)
