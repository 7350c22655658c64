"""Bundles trained with DDP on the CPU (gloo, 2 processes): sharding, synchronised weights, rank-0 outputs.

The processes are forked from the test process (no re-import: fast); the torchrun launch itself is
covered by the slow test at the end.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from data_prep.synthetic2d import generate
from pipeline.atomic import atomic_path, write_json
from pipeline.bundles import multi_gpu_configs, run_bundle
from pipeline.distillation.teacher import load_teacher
from pipeline.engine.datalist import load_role
from pipeline.networks import build_network, load_checkpoint
from pipeline.networks.parallel import unwrap_model

WORLD = 2
BATCH = 4
SETTINGS = {
    "image_size": [32, 32],
    "batch_size": BATCH,
    "max_epochs": 1,
    "progress_bar": False,
    "num_workers": 0,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _count_calls(module, name: str, counts: dict) -> None:
    """Count the calls of ``module.name`` in this (forked) process."""
    original = getattr(module, name)

    @functools.wraps(original)  # keeps the signature, which data_prep.embedded inspects
    def counted(*args, **kwargs):
        counts[name] += 1
        return original(*args, **kwargs)

    setattr(module, name, counted)


def _attached_handler_types(engine) -> list[str]:
    """Class names of the handler objects attached to an ignite engine (callables or their bound methods)."""
    names = set()
    for handlers in engine._event_handlers.values():
        for function, *_ in handlers:
            parent = getattr(function, "_parent", None)  # ignite's wrapper of a filtered event handler
            function = parent() if parent is not None else function
            owner = getattr(function, "__self__", function)
            if owner is not engine and not inspect.isroutine(owner):
                names.add(type(owner).__name__)
    return sorted(names)


def _worker(rank: int, bundle: str, settings: dict, port: int, report_dir: Path) -> None:
    """One DDP rank: run the bundle's training with the multi-GPU configs, then report what it holds."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    import data_prep.synthetic2d
    import pipeline.distillation.teacher

    calls = {"save_teacher": 0, "generate": 0}
    _count_calls(pipeline.distillation.teacher, "save_teacher", calls)
    _count_calls(data_prep.synthetic2d, "generate", calls)
    workflow = run_bundle(bundle, "train", overrides=multi_gpu_configs(bundle), settings=settings)
    parsed = workflow.parser.get_parsed_content
    weights = {"network": unwrap_model(parsed("network")).state_dict()}
    if bundle == "distillation":
        weights["distillation"] = parsed("distillation").state_dict()
    with atomic_path(report_dir / f"rank{rank}.pt") as tmp:
        torch.save(weights, tmp)
    write_json(
        {
            "pid": os.getpid(),
            "iterations": parsed("train#trainer").state.iteration,
            "network_type": type(parsed("network")).__name__,
            "calls": calls,
            "trainer_handlers": _attached_handler_types(parsed("train#trainer")),
            "evaluator_handlers": _attached_handler_types(parsed("validate#evaluator")),
        },
        report_dir / f"rank{rank}.json",
    )


def _train(bundle: str, settings: dict, report_dir: Path) -> list[dict]:
    report_dir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(
        _worker,
        args=(bundle, settings, _free_port(), report_dir),
        nprocs=WORLD,
        join=True,
        start_method="fork",
    )
    reports = []
    for rank in range(WORLD):
        report = json.loads((report_dir / f"rank{rank}.json").read_text())
        report["weights"] = torch.load(report_dir / f"rank{rank}.pt", weights_only=True)
        reports.append(report)
    return reports


def _assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _event_file_pids(folder: Path) -> set[int]:
    return {int(p.name.split(".")[-2]) for p in folder.glob("events.out.tfevents.*")}


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_data") / "data"
    return generate(out, n=48, size=32, teacher_size=12, progress=False, verbose=False)


def test_baseline_ddp_shards_batches_syncs_weights_and_writes_on_rank0(tmp_path, datalist):
    settings = {**SETTINGS, "datalist": str(datalist), "output_root": str(tmp_path / "runs"), "max_epochs": 2}
    reports = _train("baseline", settings, tmp_path / "reports")

    n_train = len(load_role(datalist, "train"))
    per_rank = math.ceil(n_train / WORLD)  # DistributedSampler(even_divisible=True)
    assert [r["iterations"] for r in reports] == [2 * math.ceil(per_rank / BATCH)] * WORLD
    assert {r["network_type"] for r in reports} == {"DistributedDataParallel"}
    _assert_same_weights(reports[0]["weights"]["network"], reports[1]["weights"]["network"])
    main, other = reports
    writers = {"StatsHandler", "TensorBoardStatsHandler", "CheckpointSaver"}
    assert writers <= set(main["trainer_handlers"]) and writers <= set(main["evaluator_handlers"])
    assert not writers & set(other["trainer_handlers"] + other["evaluator_handlers"])
    assert {"LrScheduleHandler", "ValidationHandler"} <= set(other["trainer_handlers"])
    assert "EarlyStopHandler" in other["evaluator_handlers"]

    models = tmp_path / "runs" / "baseline" / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "checkpoint_epoch=2.pt", "checkpoint_final.pt", "model.pt", "run_settings.json"
    ]
    network = build_network("small_cnn", 2, 1, 2)
    report = load_checkpoint(network, models / "checkpoint_final.pt")  # strict: no `module.` prefix
    assert report.complete
    _assert_same_weights(network.state_dict(), reports[0]["weights"]["network"])
    assert _event_file_pids(tmp_path / "runs" / "baseline" / "tensorboard") == {reports[0]["pid"]}


def test_teacher_then_distillation_ddp(tmp_path, datalist):
    runs = tmp_path / "runs"
    settings = {**SETTINGS, "datalist": str(datalist), "output_root": str(runs)}
    teacher_reports = _train("teacher", {**settings, "probe_epochs": 1}, tmp_path / "teacher")
    assert [r["calls"]["save_teacher"] for r in teacher_reports] == [1, 0]
    teacher = load_teacher(runs / "teacher" / "models" / "teacher.pt")
    _assert_same_weights(teacher.network.state_dict(), teacher_reports[0]["weights"]["network"])

    reports = _train("distillation", settings, tmp_path / "distillation")
    assert {r["network_type"] for r in reports} == {"DistributedDataParallel"}
    _assert_same_weights(reports[0]["weights"]["network"], reports[1]["weights"]["network"])
    # the student's probes are not in DDP: equal on both ranks only if their gradients were averaged
    _assert_same_weights(reports[0]["weights"]["distillation"], reports[1]["weights"]["distillation"])
    checkpoint = torch.load(runs / "distillation" / "models" / "checkpoint_final.pt", weights_only=True)
    assert {"network", "distillation"} <= set(checkpoint)
    _assert_same_weights(checkpoint["distillation"], reports[0]["weights"]["distillation"])


def test_embedded_dataset_is_generated_once_by_rank0(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTCUT_KD_DATA", str(tmp_path / "cache"))
    settings = {**SETTINGS, "data_params": {"n": 24, "size": 32}, "output_root": str(tmp_path / "runs")}
    reports = _train("baseline", settings, tmp_path / "reports")
    assert [r["calls"]["generate"] for r in reports] == [1, 0]  # rank 1 waited and reused it
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_torchrun_cli_trains_baseline_on_two_processes(tmp_path, datalist):
    command = [
        sys.executable, "-m", "pipeline.bundles", "baseline", "train", "--multi-gpu", "2",
        "--datalist", str(datalist), "--image_size", "[32,32]", "--batch_size", str(BATCH), "--max_epochs", "1",
        "--progress_bar", "False", "--output_root", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run" in result.stdout
    network = build_network("small_cnn", 2, 1, 2)
    assert load_checkpoint(network, tmp_path / "baseline" / "models" / "checkpoint_final.pt").complete
    assert len(_event_file_pids(tmp_path / "baseline" / "tensorboard")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fixed_node_ranks", [False, True], ids=["c10d", "static"])
def test_two_nodes_on_localhost_meet_at_the_rendezvous(tmp_path, datalist, fixed_node_ranks):
    endpoint = f"127.0.0.1:{_free_port()}"
    launches = []
    for node in range(2):
        command = [
            sys.executable, "-m", "pipeline.bundles.torchrun", "baseline", "--nproc-per-node", "1", "--nnodes", "2",
            "--rdzv-endpoint", endpoint, "--rdzv-id", "test-job", *(["--node-rank", str(node)] if fixed_node_ranks else []),
            "--datalist", str(datalist), "--image_size", "[32,32]", "--batch_size", str(BATCH), "--max_epochs", "1",
            "--progress_bar", "False", "--output_root", str(tmp_path),
        ]  # fmt: skip
        launches.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [launch.communicate(timeout=600)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    network = build_network("small_cnn", 2, 1, 2)
    assert load_checkpoint(network, tmp_path / "baseline" / "models" / "checkpoint_final.pt").complete
    assert len(_event_file_pids(tmp_path / "baseline" / "tensorboard")) == 1
