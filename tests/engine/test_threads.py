"""torch's thread count comes from the one setting ``num_threads``: applied by every bundle workflow
and by the experiment, and recorded (run_settings.json, the experiment's console and report log)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from pipeline.engine.threads import apply_num_threads
from pipeline.experiment import ExperimentConfig, run_experiment
from pipeline.experiment import run as experiment_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from bundle_helpers import tiny_settings, workflow  # noqa: E402


@pytest.fixture
def two_threads():
    """torch at 2 threads for the test (so that 1 is a change), the process's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_count_is_applied_and_null_leaves_torch_s_own(two_threads):
    assert apply_num_threads(None) == 2 and torch.get_num_threads() == 2
    assert apply_num_threads(1) == 1 and torch.get_num_threads() == 1
    assert apply_num_threads(None) == 1  # null changes nothing


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_a_bad_count_is_refused_naming_the_setting_and_the_value(bad, two_threads):
    with pytest.raises(
        ValueError,
        match=rf"^num_threads must be a positive integer or null \(torch's default\), got {bad!r}$",
    ):
        apply_num_threads(bad)
    assert torch.get_num_threads() == 2


def test_training_runs_at_num_threads_and_records_it(tiny_datalist_2d, tmp_path, two_threads):
    wf = workflow("baseline", "train", tiny_settings(tiny_datalist_2d, tmp_path, size=16, num_threads=1))
    seen = []
    wf.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.ITERATION_COMPLETED, lambda _: seen.append(torch.get_num_threads())
    )
    wf.run()
    wf.finalize()
    assert seen and set(seen) == {1}
    recorded = json.loads((tmp_path / "baseline" / "models" / "run_settings.json").read_text())
    assert recorded["num_threads"] == 1


def test_training_without_the_setting_records_torch_s_count(tiny_datalist_2d, tmp_path, two_threads):
    wf = workflow("baseline", "train", tiny_settings(tiny_datalist_2d, tmp_path, size=16))
    wf.run()
    wf.finalize()
    assert (
        json.loads((tmp_path / "baseline" / "models" / "run_settings.json").read_text())["num_threads"] == 2
    )


def test_the_experiment_applies_the_setting_to_every_step_and_reports_it(
    tmp_path, monkeypatch, capsys, two_threads
):
    seen = []

    class NoFingerprints:
        def __init__(self, config):
            pass

        def method(self, scenario, method):
            return "x"

    def step(config, fingerprints, output, scenario, method, *args):
        seen.append((method, torch.get_num_threads()))

    def report(config, output):
        (output / "report").mkdir(parents=True, exist_ok=True)
        return output / "report"

    monkeypatch.setattr(experiment_run, "Fingerprints", NoFingerprints)
    monkeypatch.setattr(experiment_run, "_train_and_evaluate", step)
    monkeypatch.setattr(experiment_run, "analyses", lambda config, method: [])
    monkeypatch.setattr(experiment_run, "write_report", report)
    config = ExperimentConfig(
        output=str(tmp_path / "out"), methods=["erm", "reference"], settings={"num_threads": 1}
    )
    run_experiment(config)
    assert seen == [("erm", 1), ("reference", 1)]
    assert "] torch threads: 1\n" in capsys.readouterr().out
    assert "torch threads: 1 (setting num_threads)" in (tmp_path / "out" / "report" / "log.txt").read_text()


def test_the_experiment_refuses_a_bad_count_before_anything_runs(tmp_path, two_threads):
    config = ExperimentConfig(output=str(tmp_path / "out"), methods=["erm"], settings={"num_threads": 0})
    with pytest.raises(ValueError, match=r"^num_threads must be a positive integer or null .*got 0$"):
        run_experiment(config)
    assert not (tmp_path / "out").exists()
