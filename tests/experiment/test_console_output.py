"""The experiment's console: a progress line per method and epoch, logs in a file, the results at the end."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.engine.log_file import logs_to_file
from pipeline.engine.progress import EpochProgress

REPO = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(
    progress: EpochProgress, losses: list[float], epochs: int, auc: list[float], resume_at: int = 0
) -> None:
    """An ignite engine whose iterations return ``losses`` and whose 'validation' sets ``auc[epoch - 1]``;
    ``resume_at``: epochs already done, set at STARTED after the progress handler (like CheckpointLoader)."""
    trainer = Engine(
        lambda engine, batch: {"loss": torch.tensor(losses[(engine.state.iteration - 1) % len(losses)])}
    )
    progress.evaluator.state.metrics.clear()

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # registered before the progress handler, like ValidationHandler
        progress.evaluator.state.metrics["val_auc"] = auc[engine.state.epoch - 1]

    progress.attach(trainer)

    @trainer.on(Events.STARTED)
    def load_checkpoint(engine):
        engine.state.epoch, engine.state.iteration = resume_at, resume_at * len(losses)

    trainer.run(range(len(losses)), max_epochs=epochs)


def test_without_a_terminal_one_line_per_epoch_with_mean_loss_and_validation_auc():
    stream = io.StringIO()
    progress = EpochProgress(
        "erm", evaluator=SimpleNamespace(state=SimpleNamespace(metrics={})), stream=stream
    )
    _train(progress, losses=[1.0, 0.5, 0.3], epochs=3, auc=[0.61, 0.72, 0.83])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert lines[0].startswith("erm: epoch 1/3, loss=0.600, val_auc=0.610 [")
    assert lines[2].startswith("erm: epoch 3/3, loss=0.600, val_auc=0.830 [")
    assert lines[2].endswith("<00:00]")  # elapsed < remaining (none left)


def test_on_a_terminal_one_bar_redrawn_in_place():
    stream = _Terminal()
    progress = EpochProgress(
        "teacher", evaluator=SimpleNamespace(state=SimpleNamespace(metrics={})), stream=stream
    )
    _train(progress, losses=[0.2], epochs=4, auc=[0.5, 0.6, 0.7, 0.9])
    text = stream.getvalue()
    assert "\r" in text and text.count("\n") == 1  # redrawn, then left as one line
    last = text.rstrip("\n").split("\r")[-1]
    assert "teacher: 100%|" in last and "epoch 4/4, loss=0.200, val_auc=0.900" in last


def test_a_resumed_run_counts_from_the_loaded_epoch():
    stream, terminal = io.StringIO(), _Terminal()
    for out in (stream, terminal):
        progress = EpochProgress(
            "erm", evaluator=SimpleNamespace(state=SimpleNamespace(metrics={})), stream=out
        )
        _train(progress, losses=[0.4], epochs=4, auc=[0.5, 0.6, 0.7, 0.8], resume_at=2)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == [
        "erm: epoch 3/4",
        "erm: epoch 4/4",
    ]
    first_frame = next(frame for frame in terminal.getvalue().split("\r") if frame)
    assert "erm:  50%|" in first_frame and "epoch 2/4" in first_frame


def test_logs_go_to_the_file_and_the_console_set_up_comes_back(tmp_path, capsys):
    from monai.apps import get_logger

    monai_logger = get_logger("test_console_output.monai_style")  # made by MONAI: own stdout handler
    root_handlers = logging.getLogger().handlers[:]
    log = tmp_path / "run" / "log.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with logs_to_file(log, mode="w"):
            logging.getLogger("ignite.engine.engine.SupervisedTrainer").info("Epoch[1] Complete")
            monai_logger.info("Epoch: 1/1, Iter: 1/1 -- train_loss: 0.5")
            warnings.warn("an undefined metric", UserWarning, stacklevel=1)
            raise RuntimeError("boom")
    assert capsys.readouterr().out == ""
    text = log.read_text()
    assert "Epoch[1] Complete" in text and "train_loss: 0.5" in text and "an undefined metric" in text
    assert logging.getLogger().handlers == root_handlers
    monai_logger.info("after the block")
    assert "after the block" in capsys.readouterr().out
    assert "after the block" not in log.read_text()


def test_experiment_console_is_short_and_ends_with_the_results(tiny_datalist_2d, tmp_path):
    output = tmp_path / "experiment"
    command = [
        sys.executable, "-m", "pipeline.experiment", "--output", str(output), "--methods", "erm", "reference",
        "--set", f"datalist={tiny_datalist_2d}", "--set", "image_size=[32, 32]", "--set", "max_epochs=1",
        "--set", "batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert len(out.splitlines()) < 25, out
    assert " - INFO - " not in out + done.stderr and "Iter:" not in out + done.stderr
    for method in ("erm", "reference"):
        assert f"{method}: epoch 1/1, loss=" in out
        log = (output / "localized2d" / method / "log.txt").read_text()
        assert "Iter: 1/" in log and "train_loss" in log  # the iteration logs
        assert "SupervisedEvaluator" in log  # the evaluation's logs are appended
    table = out[out.index("AUC by test set, localized2d:") :]
    assert table.splitlines()[1].split()[:3] == ["method", "in_distribution", "bias_free"]
    assert [line.split()[0] for line in table.splitlines()[2:4]] == ["erm", "reference"]
    assert out.rstrip().splitlines()[-2].endswith(str(output / "report" / "results.md"))


def test_a_single_bundle_run_still_prints_monai_logging(tiny_datalist_2d, tmp_path):
    command = [
        sys.executable, "-m", "pipeline.bundles", "baseline", "train", "--datalist", str(tiny_datalist_2d),
        "--image_size", "[32,32]", "--max_epochs", "1", "--batch_size", "16", "--progress_bar", "False",
        "--tensorboard", "False", "--output_root", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Iter: 1/" in done.stdout and "Metrics -- val_auc" in done.stdout  # MONAI's StatsHandler lines
    assert "baseline: epoch 1/1" not in done.stdout  # the experiment's progress line is off
    assert not (tmp_path / "baseline" / "log.txt").exists()


@pytest.mark.parametrize("elapsed, clock", [(239.6, "03:59"), (59.99, "00:59"), (60.0, "01:00"), (3725.2, "62:05")])
def test_experiment_clock_never_shows_sixty_seconds(monkeypatch, capsys, elapsed, clock):
    from pipeline.experiment import run

    monkeypatch.setattr(run.time, "monotonic", lambda: 1000.0 + elapsed)
    run._progress("report", started=1000.0)
    assert capsys.readouterr().out == f"[experiment {clock}] report\n"
