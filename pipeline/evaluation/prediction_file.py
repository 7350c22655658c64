"""The per-sample prediction file: written by :class:`PredictionWriter` (a handler of a MONAI
evaluator) and read by :func:`load_predictions`, one CSV per model and test set.

Columns (:data:`COLUMNS`): ``id`` (str), ``label`` (0/1), ``bias`` (0/1: the artifact is in this
image), ``prob`` (the model's probability of class 1) and ``pred`` (0/1; a file written
elsewhere may leave it out: then ``prob >= threshold``). Extra columns (e.g. groups) are kept as text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.utils import evenly_divisible_all_gather, string_list_all_gather

from pipeline.atomic import write_csv

COLUMNS = ("id", "label", "bias", "prob", "pred")
REQUIRED_COLUMNS = COLUMNS[:4]
BINARY_COLUMNS = ("label", "bias", "pred")


def prediction_file_name(test_set: str) -> str:
    """File name of a test set's predictions inside a run's ``eval`` folder."""
    return f"predictions_{test_set}.csv"


class PredictionWriter:
    """Collect (id, label, bias, probability of class 1) for every sample an evaluator sees.

    Reads ids, labels and bias flags from the batch (``engine.state.batch``) and the logits from
    the evaluator's raw network output, so it works whatever post-processing the bundle applies.
    Results of all ranks are gathered; rank 0 writes ``filename`` at the end of each run.

    Args:
        filename: CSV to write (:data:`COLUMNS`).
        id_key, label_key, bias_key: batch keys. A batch without ``bias_key`` gets bias 0.
        threshold: probability from which ``pred`` is 1.
    """

    def __init__(
        self,
        filename: str | Path,
        id_key: str = "id",
        label_key: str = "label",
        bias_key: str = "bias",
        threshold: float = 0.5,
    ) -> None:
        self.filename = Path(filename)
        self.id_key, self.label_key, self.bias_key = id_key, label_key, bias_key
        self.threshold = threshold
        self._ids: list[str] = []
        self._rows: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._ids, self._rows = [], []

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        for key in (self.id_key, self.label_key):
            if key not in batch:
                raise ValueError(f"PredictionWriter: batch has no '{key}' key; keys: {sorted(batch)}")
        logits = _raw_logits(engine.state.output)
        probs = torch.softmax(logits.float(), dim=1)[:, 1]
        labels = torch.as_tensor(batch[self.label_key]).reshape(-1).to(probs)
        bias = batch.get(self.bias_key)
        bias = torch.zeros_like(labels) if bias is None else torch.as_tensor(bias).reshape(-1).to(probs)
        self._ids.extend(str(i) for i in batch[self.id_key])
        self._rows.append(torch.stack([labels, bias, probs], dim=1).detach().cpu())

    def _write(self, engine: Engine) -> None:
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, 3)
        rows = evenly_divisible_all_gather(rows, concat=True)
        ids = string_list_all_gather(self._ids)
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_rank()
        ):
            return
        rows = rows.numpy()
        frame = pd.DataFrame(
            {"id": ids, "label": rows[:, 0].astype(int), "bias": rows[:, 1].astype(int), "prob": rows[:, 2]}
        )
        frame["pred"] = (frame["prob"] >= self.threshold).astype(int)
        write_csv(frame[list(COLUMNS)], self.filename)


def _raw_logits(output) -> torch.Tensor:
    """Stack the per-sample ``pred`` entries of a decollated (or collated) evaluator output."""
    if isinstance(output, dict):
        return torch.as_tensor(output["pred"])
    return torch.stack([torch.as_tensor(item["pred"]) for item in output])


def _bad_values_message(source: str, column: str, values: pd.Series, mask: np.ndarray, allowed: str) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(f"{values.iloc[r]!r} (data row {r + 1})" for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{source}: column {column!r} must be {allowed}; found {shown}{more}"


def validate_predictions(df: pd.DataFrame, source: str = "predictions") -> pd.DataFrame:
    """Check a prediction table and return a typed copy.

    Args:
        df: table with the columns ``id``, ``label``, ``bias``, ``prob`` and optionally ``pred``
            plus extra group columns (kept unchanged).
        source: name used in error messages (the file path when loading).

    Returns:
        A copy with ``id`` as str, ``label``/``bias``/``pred`` as int64 and ``prob`` as float64.

    Raises:
        ValueError: a required column is missing, the table is empty, ids repeat, ``label``,
            ``bias`` or ``pred`` is not 0/1, or ``prob`` is not a number in [0, 1].
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; required {list(REQUIRED_COLUMNS)}, found {list(df.columns)}"
        )
    if len(df) == 0:
        raise ValueError(f"{source}: has no rows")
    out = df.reset_index(drop=True).copy()
    ids = out["id"]
    id_missing = ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy()
    if id_missing.any():
        raise ValueError(_bad_values_message(source, "id", ids, id_missing, "a non-empty identifier"))
    out["id"] = ids.astype(str)
    repeated = out["id"].duplicated(keep=False).to_numpy()
    if repeated.any():
        raise ValueError(_bad_values_message(source, "id", out["id"], repeated, "unique within a file"))
    for column in BINARY_COLUMNS:
        if column not in out.columns:
            continue
        numeric = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(numeric, (0.0, 1.0))
        if bad.any():
            raise ValueError(_bad_values_message(source, column, out[column], bad, "0 or 1"))
        out[column] = numeric.astype(np.int64)
    prob = pd.to_numeric(out["prob"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(prob) | (prob < 0.0) | (prob > 1.0)
    if bad.any():
        raise ValueError(_bad_values_message(source, "prob", out["prob"], bad, "a number in [0, 1]"))
    out["prob"] = prob
    return out


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read and validate one prediction file.

    Returns:
        The validated, typed table (see :func:`validate_predictions`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or malformed; the message names the file, the column and
            the offending values with their row numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {str(path)!r} does not exist")
    try:
        # Everything as text first so that ids like "007" or "NA" survive and bad cells can be shown.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"prediction file {str(path)!r}: is empty (no header)") from err
    return validate_predictions(raw, source=f"prediction file {str(path)!r}")


def predicted_labels(df: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
    """The predicted class per row: the ``pred`` column if present, else ``prob >= threshold``.

    Raises:
        ValueError: ``threshold`` is not in [0, 1].
    """
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if "pred" in df.columns:
        return df["pred"].to_numpy(dtype=np.int64)
    return (df["prob"].to_numpy(dtype=float) >= threshold).astype(np.int64)
