"""One progress display per training run: epochs, mean loss, validation metric, elapsed and remaining time.

On a terminal it is a tqdm bar redrawn in place; when the output is not a terminal (CI, nohup,
a file) it prints one line per finished epoch instead, with the same text.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, Callable, TextIO

from ignite.engine import Engine, Events
from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| epoch {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]"
LINE_FORMAT = "{desc}: epoch {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]"


class EpochProgress:
    """Ignite handler: one bar over the trainer's epochs (attach it after the ``ValidationHandler``).

    Args:
        label: text before the bar (the method or bundle name).
        evaluator: the validation engine whose ``metric_name`` is shown (None: loss only).
        metric_name: key of ``evaluator.state.metrics`` to show.
        output_transform: iteration output -> loss (tensor or float); the epoch's mean is shown.
        stream: where to write; None: ``sys.stdout`` at the start of the run.
    """

    def __init__(
        self,
        label: str,
        evaluator: Engine | None = None,
        metric_name: str = "val_auc",
        output_transform: Callable[[Any], Any] = lambda output: output["loss"],
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.evaluator = evaluator
        self.metric_name = metric_name
        self.output_transform = output_transform
        self.stream = stream
        self._bar: tqdm | None = None
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _start(self, engine: Engine) -> None:
        self._stream, self._started, self._first_epoch = self.stream or sys.stdout, time.monotonic(), None

    def _epoch_started(self, engine: Engine) -> None:
        self._losses.clear()
        if self._first_epoch is not None:
            return
        # the epochs before this one: a resumed run's checkpoint is loaded after STARTED
        self._first_epoch, self._total = engine.state.epoch - 1, engine.state.max_epochs
        if _is_terminal(self._stream):
            # 80x24 where the terminal reports 0x0 (tqdm would draw nothing)
            size = shutil.get_terminal_size()
            self._bar = tqdm(
                total=self._total, initial=self._first_epoch, desc=self.label, bar_format=BAR_FORMAT,
                file=self._stream, leave=True, ncols=size.columns, nrows=size.lines,
            )  # fmt: skip

    def _record_loss(self, engine: Engine) -> None:
        self._losses.append(float(self.output_transform(engine.state.output)))
        if self._bar is not None:  # within an epoch: the running mean loss and the elapsed time
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.update(0)  # redraws at most every `mininterval` seconds

    def postfix(self) -> str:
        """``loss=0.412, val_auc=0.931``: the epoch's mean loss so far and the latest validation metric."""
        parts = []
        if self._losses:
            parts.append(f"loss={sum(self._losses) / len(self._losses):.3f}")
        metric = self.evaluator.state.metrics.get(self.metric_name) if self.evaluator is not None else None
        if metric is not None:
            parts.append(f"{self.metric_name}={float(metric):.3f}")
        return ", ".join(parts)

    def _epoch_completed(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.update(engine.state.epoch - self._bar.n)
            return
        line = tqdm.format_meter(
            engine.state.epoch, self._total, time.monotonic() - self._started, prefix=self.label,
            postfix=self.postfix(), bar_format=LINE_FORMAT, initial=self._first_epoch,
        )  # fmt: skip
        print(line, file=self._stream, flush=True)

    def _close(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
