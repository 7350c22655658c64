"""Per-sample prediction files written from a MONAI evaluator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.utils import evenly_divisible_all_gather, string_list_all_gather

from pipeline.atomic import write_csv

COLUMNS = ("id", "label", "bias", "prob", "pred")


class PredictionWriter:
    """Collect (id, label, bias, probability of class 1) for every sample an evaluator sees.

    Reads ids, labels and bias flags from the batch (``engine.state.batch``) and the logits from
    the evaluator's raw network output, so it works whatever post-processing the bundle applies.
    Results of all ranks are gathered; rank 0 writes ``filename`` at the end of each run.

    Args:
        filename: CSV to write (columns id, label, bias, prob, pred).
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
            {
                "id": ids,
                "label": rows[:, 0].astype(int),
                "bias": rows[:, 1].astype(int),
                "prob": rows[:, 2],
            }
        )
        frame["pred"] = (frame["prob"] >= self.threshold).astype(int)
        write_csv(frame, self.filename)


def _raw_logits(output) -> torch.Tensor:
    """Stack the per-sample ``pred`` entries of a decollated (or collated) evaluator output."""
    if isinstance(output, dict):
        return torch.as_tensor(output["pred"])
    return torch.stack([torch.as_tensor(item["pred"]) for item in output])
