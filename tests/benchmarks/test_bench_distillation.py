"""Distillation benchmark: report structure at a tiny size (not timings), measurement helpers, runner."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import __main__ as runner
from benchmarks.bench_distillation import (
    TARGETS,
    VARIANTS,
    BenchmarkConfig,
    PeakMemory,
    format_report,
    make_batches,
    run_benchmark,
    run_variant,
    time_interleaved,
)

TINY = BenchmarkConfig(size=16, batch_size=4, batches=2, iterations=3, threads=1, isolate=False)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "distillation.json"
    lines = []
    report = run_benchmark(replace(TINY, profile=True), out=out, log=lines.append)
    return report, out, "\n".join(lines)


def test_report_has_every_variant_timed_after_warm_up(tiny_report):
    report, _, _ = tiny_report
    assert list(report["variants"]) == list(VARIANTS)
    rounds = math.ceil(TINY.iterations / TINY.batches)  # interleaved: whole epochs, in turns
    for name, variant in report["variants"].items():
        assert variant["timed_iterations"] == rounds * TINY.batches, name
        assert variant["separate"]["step_ms_median"] > 0  # each variant's own run, kept beside
        assert len(variant["rounds_ms_median"]) == rounds
        assert 0 < variant["step_ms_min"] <= variant["step_ms_median"]
        assert variant["step_cpu_ms_median"] > 0
        if variant["timed_peak_memory_mb"] is not None:  # the whole run includes the timed steps
            assert variant["timed_peak_memory_mb"] <= variant["peak_memory_mb"] + 1e-6
    assert report["ratios_to_erm"]["erm"]["step_ms_median"] == pytest.approx(1.0)
    assert report["config"]["threads"] == 1


def test_cached_variant_times_only_cache_hits_and_trains_like_the_live_one(tiny_report):
    variants = tiny_report[0]["variants"]
    cached, live = variants["cached_teacher"], variants["live_teacher"]
    assert cached["cache_misses"] == TINY.batches * TINY.warmup_epochs
    assert cached["cache_hits"] == TINY.iterations
    assert "cache_hits" not in live
    # same student, data and teacher: the cache must not change what is trained
    assert cached["final_loss"] == pytest.approx(live["final_loss"], rel=1e-5)
    assert "teacher_forward" in live["parts_ms_median"]
    assert "teacher_forward" not in cached["parts_ms_median"]


def test_targets_are_judged_against_their_limits(tiny_report):
    report, _, table = tiny_report
    targets = report["targets"]
    assert [(t["variant"], t["metric"], t["limit"]) for t in targets] == list(TARGETS)
    for target in targets:
        ratio = report["ratios_to_erm"][target["variant"]][target["metric"]]
        assert target["ratio"] == ratio
        if ratio is None:
            # a memory growth of ERM's that is zero on this machine (tiny data: nothing grows after the
            # warm-up) has no ratio; the table says n/a instead of judging it
            assert target["metric"].endswith("memory_mb") and target["status"] == "n/a"
        else:
            assert target["status"] == ("PASS" if ratio <= target["limit"] else "FAIL")
    # step times always have a ratio
    assert all(t["ratio"] is not None for t in targets if t["metric"] == "step_ms_median")
    result_lines = [line for line in table.splitlines() if line.rstrip().endswith(("PASS", "FAIL", "n/a"))]
    assert len(result_lines) == len(TARGETS)
    assert all(name in table for name in VARIANTS)
    assert "memory:" in table


def test_json_report_matches_the_returned_one(tiny_report):
    report, out, _ = tiny_report
    written = json.loads(out.read_text())
    assert written["targets"] == report["targets"]
    assert written["variants"].keys() == report["variants"].keys()
    assert written["memory_method"] == report["memory_method"]
    assert set(written["environment"]) >= {"load_average_start", "load_average_end", "threads", "note"}


def test_interleaved_turns_train_each_variant_as_its_own_run_does():
    config = replace(TINY, iterations=4)  # two whole epochs after the warm-up, as the separate runs
    timed = time_interleaved(config)
    assert list(timed) == list(VARIANTS)
    for variant in VARIANTS:
        alone = run_variant(variant, config)
        # interrupted and resumed every epoch: the same steps, so the same final loss
        assert timed[variant]["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-6), variant
        assert len(timed[variant]["steps_ms"]) == len(alone["steps_ms"]) == 4
        assert len(timed[variant]["rounds_ms_median"]) == 2


def test_separate_timing_takes_the_step_times_from_each_variants_own_run():
    lines = []
    report = run_benchmark(replace(TINY, timing="separate"), log=lines.append)
    for name, variant in report["variants"].items():
        assert variant["timed_iterations"] == TINY.iterations, name
        assert "separate" not in variant and "rounds_ms_median" not in variant
    assert "each variant in its own run" in "\n".join(lines)


def test_same_seed_trains_the_same_student():
    first, second = run_variant("erm", TINY), run_variant("erm", TINY)
    assert first["final_loss"] == second["final_loss"]
    other = run_variant("erm", replace(TINY, seed=1))
    assert other["final_loss"] != first["final_loss"]


def test_batches_have_the_bundle_keys_and_are_reproducible():
    config = BenchmarkConfig(size=8, spatial_dims=3, batch_size=3, batches=2)
    batches, again = make_batches(config), make_batches(config)
    assert [sorted(b) for b in batches] == [["bias", "id", "image", "label"]] * 2
    assert batches[0]["image"].shape == (3, 1, 8, 8, 8)
    assert torch.equal(batches[1]["image"], again[1]["image"])
    ids = [i for b in batches for i in b["id"]]
    assert len(set(ids)) == len(ids) == 6


@pytest.mark.parametrize(
    "change, match",
    [({"iterations": 0}, "iterations"), ({"device": "tpu"}, "device"), ({"spatial_dims": 4}, "spatial_dims"),
     ({"network": "nope"}, "nope"), ({"threads": 0}, "threads"), ({"timing": "mixed"}, "timing")],
)  # fmt: skip
def test_invalid_config_is_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **change).checked()


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant must be one of"):
        run_variant("distil", TINY)


def test_peak_memory_sees_a_new_allocation_and_splits_warm_up_from_timed_steps():
    memory = PeakMemory(torch.device("cpu"))
    block = torch.ones(16 * 2**20)  # 64 MiB, touched
    assert memory.growth_mb() >= 48
    if not memory.resettable:
        pytest.skip(f"peak mark cannot be reset here ({memory.method})")
    del block
    memory.start_timed()
    assert memory.growth_mb() >= 48  # the warm-up's peak is kept
    assert memory.timed_growth_mb() < 32


def test_runner_finds_and_resolves_benchmarks():
    assert {"bench_data_prep", "bench_distillation"} <= set(runner.available_benchmarks())
    commands = runner.commands(["distillation", "bench_distillation.py"], ["--iterations", "2"])
    assert commands == [[sys.executable, "-m", "benchmarks.bench_distillation", "--iterations", "2"]]
    assert len(runner.commands([])) == len(runner.available_benchmarks())
    with pytest.raises(ValueError, match="available: .*bench_distillation"):
        runner.resolve(["nope"])
    assert runner.main(["nope"]) == 2
    assert runner.main(["--", "--iterations", "2"]) == 2


@pytest.mark.slow
def test_cli_runs_each_variant_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    options = ["--size", "16", "--batch-size", "4", "--batches", "2", "--iterations", "3", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "distillation", "--", *options, "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert "VmHWM" in report["memory_method"] or "ru_maxrss" in report["memory_method"]
    assert "MALLOC_MMAP_THRESHOLD_=131072 in each variant's process" in report["memory_method"]
    assert all(v["peak_memory_mb"] > 0 for v in report["variants"].values())
    # the printed table is the JSON report's, with each target's PASS/FAIL as judged there
    assert format_report(report) in done.stdout
