"""pipeline.distributed without a process group (rank helpers, handler filter), the torchrun launcher
(pipeline.bundles.torchrun) and the multi-GPU configs."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.handlers import (
    CheckpointSaver,
    EarlyStopHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
)

from pipeline import bundles, distributed
from pipeline.bundles import cli, torchrun

CONFIGS = bundles.BUNDLES_ROOT / "common" / "configs"
TRAINING_BUNDLES = ("baseline", "teacher", "distillation")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_rank_helpers_read_torchrun_env_without_process_group(monkeypatch, no_torchrun_env):
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (3, 4, False)
    distributed.barrier()  # no process group: returns at once
    distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_devices_and_backend_on_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device() == torch.device("cpu")
    assert distributed.default_backend() == "gloo"
    assert distributed.ddp_device_ids(torch.device("cpu")) is None
    assert distributed.ddp_device_ids("cuda:3") == [3]


def test_bad_local_rank_and_missing_torchrun_env_raise(monkeypatch, no_torchrun_env):
    monkeypatch.setenv("LOCAL_RANK", "first")
    with pytest.raises(ValueError, match="LOCAL_RANK.*'first'"):
        distributed.local_device()
    with pytest.raises(ValueError, match=r"\['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        distributed.init_process_group("cpu")
    with pytest.raises(ValueError, match="backend.*'tcp'"):
        distributed.init_process_group("cpu", backend="tcp")


def test_only_rank0_logs_below_warning(monkeypatch, no_torchrun_env):
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    distributed.log_on_main_process_only()
    assert root.level == logging.INFO
    monkeypatch.setenv("RANK", "2")
    distributed.log_on_main_process_only()
    assert root.level == logging.WARNING


def test_main_process_handlers_drop_writers_on_other_ranks(tmp_path, monkeypatch, no_torchrun_env):
    keep = [
        EarlyStopHandler(patience=1, score_function=lambda engine: 0.0),
        ValidationHandler(interval=1),
    ]
    writers = [
        StatsHandler(),
        TensorBoardStatsHandler(log_dir=str(tmp_path)),
        CheckpointSaver(save_dir=str(tmp_path), save_dict={"network": torch.nn.Linear(1, 1)}),
    ]
    handlers = [writers[0], keep[0], writers[1], None, writers[2], keep[1]]
    assert distributed.main_process_handlers(handlers) == [h for h in handlers if h is not None]
    monkeypatch.setenv("RANK", "1")
    assert distributed.main_process_handlers(handlers) == keep
    assert distributed.main_process_handlers(None) == []


def test_torchrun_command_one_node_is_standalone():
    command = torchrun.torchrun_command(["-m", "pipeline.bundles", "baseline"], 4)
    assert command[1:] == [
        "-m", "torch.distributed.run", "--nproc_per_node", "4", "--standalone", "-m", "pipeline.bundles", "baseline",
    ]  # fmt: skip


def test_torchrun_command_several_nodes_use_c10d_or_static_rendezvous():
    command = torchrun.torchrun_command(
        ["train.py"], "gpu", nnodes=2, rdzv_endpoint="node0:29400", rdzv_id="job7"
    )
    text = shlex.join(command)
    assert "--standalone" not in command and "--node_rank" not in command
    for option in ("--nnodes 2", "--rdzv_backend c10d", "--rdzv_endpoint node0:29400", "--rdzv_id job7",
                   "--nproc_per_node gpu"):  # fmt: skip
        assert option in text
    assert command[-1] == "train.py"
    # torchrun ignores --node_rank with c10d: a fixed node rank means the static rendezvous
    text = shlex.join(
        torchrun.torchrun_command(["train.py"], 8, nnodes=2, node_rank=1, rdzv_endpoint="n0:1")
    )
    assert "--rdzv_backend static" in text and "--node_rank 1" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nproc_per_node": 0}, "nproc_per_node"),
        ({"nproc_per_node": "many"}, "nproc_per_node"),
        ({"nproc_per_node": 2, "nnodes": 2}, "rdzv_endpoint.*required"),
        ({"nproc_per_node": 2, "nnodes": 2, "rdzv_endpoint": "node0"}, "host:port"),
        ({"nproc_per_node": 2, "nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node_rank"),
        ({"nproc_per_node": 2, "nnodes": 0}, "nnodes"),
    ],
)
def test_torchrun_command_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        torchrun.torchrun_command(["train.py"], **kwargs)
    with pytest.raises(ValueError, match="program"):
        torchrun.torchrun_command([], 1)


def test_multi_gpu_configs_are_common_then_bundle(tmp_path):
    for bundle in TRAINING_BUNDLES:
        files = bundles.multi_gpu_configs(bundle)
        own = bundles.BUNDLES_ROOT / bundle / "configs" / "multi_gpu_train.yaml"
        assert [Path(f).relative_to(bundles.BUNDLES_ROOT).as_posix() for f in files] == [
            "common/configs/multi_gpu.yaml",
            *([f"{bundle}/configs/multi_gpu_train.yaml"] if own.is_file() else []),
        ]
        assert all(isinstance(_yaml(Path(f)), dict) for f in files)
    # only the teacher needs more than the shared fragment
    assert [b for b in TRAINING_BUNDLES if len(bundles.multi_gpu_configs(b)) == 2] == ["teacher"]
    with pytest.raises(ValueError, match="bundle 'nope' not found"):
        bundles.multi_gpu_configs("nope")
    (tmp_path / "solo" / "configs").mkdir(parents=True)
    (tmp_path / "solo" / "configs" / "metadata.json").write_text("{}")
    with pytest.raises(ValueError, match="'solo' cannot train on several GPUs.*multi_gpu.yaml is missing"):
        bundles.multi_gpu_configs("solo", root=tmp_path)
    # without its own multi_gpu_train.yaml a bundle adds nothing to the shared fragment
    (tmp_path / "common" / "configs").mkdir(parents=True)
    (tmp_path / "common" / "configs" / "multi_gpu.yaml").write_text("{}")
    assert bundles.multi_gpu_configs("solo", root=tmp_path) == [
        str((tmp_path / "common" / "configs" / "multi_gpu.yaml").absolute())
    ]


def test_bundles_cli_multi_gpu_wraps_monai_run_in_torchrun(capsys):
    assert cli.main(["teacher", "train", "--multi-gpu", "2", "--print-only", "--max_epochs", "1"]) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    assert command[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    assert command[6:9] == ["-m", "monai.bundle", "run"]
    files = json.loads(command[command.index("--config_file") + 1])
    assert files[-2:] == bundles.multi_gpu_configs("teacher")
    assert command[-2:] == ["--max_epochs", "1"]
    with pytest.raises(SystemExit) as stop:
        cli.main(["baseline", "evaluate", "--multi-gpu", "2", "--print-only"])
    assert stop.value.code == 2
    assert "train workflow" in capsys.readouterr().err


def test_torchrun_cli_prints_multi_node_command(capsys):
    argv = ["distillation", "--nproc-per-node", "8", "--nnodes", "2", "--rdzv-endpoint", "host:29400",
            "--rdzv-id", "kd1", "--config", "my.yaml", "--max_epochs", "3", "--print-only"]  # fmt: skip
    assert torchrun.main(argv) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    program = command[command.index("-m", 3) :]
    assert program[:4] == ["-m", "pipeline.bundles", "distillation", "train"]
    # the user's arguments first, the multi-GPU configs last (they wrap the network in DDP)
    assert program[4:8] == ["--config", "my.yaml", "--max_epochs", "3"]
    assert program[8:] == [a for f in bundles.multi_gpu_configs("distillation") for a in ("--config", f)]
    assert command[command.index("--rdzv_endpoint") + 1] == "host:29400"


# ---- the multi-GPU fragments copy parts of the shared configs: they must stay in step with them


def test_multi_gpu_marks_only_rank0_as_the_writing_process():
    training, multi = _yaml(CONFIGS / "training.yaml"), _yaml(CONFIGS / "multi_gpu.yaml")
    assert training["main_process"] is True
    assert multi["main_process"] == "$pipeline.distributed.is_main_process()"
    assert any(
        step.startswith("$@main_process and ") and "@checkpoint_saver" in step for step in training["train_run"]
    )
    tensorboard = [h for section in ("train", "validate") for h in training[section]["handlers"]
                   if isinstance(h, dict) and h["_target_"] == "TensorBoardStatsHandler"]  # fmt: skip
    assert len(tensorboard) == 2 and all("@main_process" in h["_disabled_"] for h in tensorboard)


def test_multi_gpu_initialize_keeps_every_training_step_after_joining():
    single, multi = (
        _yaml(CONFIGS / "training.yaml")["initialize"],
        _yaml(CONFIGS / "multi_gpu.yaml")["initialize"],
    )
    assert multi[0].startswith("$pipeline.distributed.init_process_group(")
    assert [e for e in multi if "pipeline.distributed" not in e and e != "$@datalist"] == single


def test_teacher_multi_gpu_run_is_train_yaml_with_barrier_and_rank0_save():
    """The multi-GPU teacher runs train.yaml's steps, each rank waiting for rank 0's files
    (pretrained weights, best model) before loading them."""
    single = _yaml(bundles.BUNDLES_ROOT / "teacher" / "configs" / "train.yaml")["run"]
    parser = ConfigParser()
    parser.read_config(bundles.config_files("teacher", overrides=bundles.multi_gpu_configs("teacher")))
    multi = parser["run"]
    assert multi == single  # only what differs is in multi_gpu_train.yaml
    phases = ("@pretraining_run", "@train_run")
    steps = [s for step in multi for s in (parser[step[1:]] if step in phases else [step])]
    trained = steps.index("$@train#trainer.run()")
    assert steps[trained + 1] == "$pipeline.distributed.barrier()"
    assert steps[trained + 2] == "$pipeline.networks.load_checkpoint(@network, @ckpt_dir + '/model.pt')"
    assert parser["pretraining_run"] == ["$pipeline.distributed.barrier()"]
    assert steps[-1].startswith("$@main_process and pipeline.distillation.teacher.save_teacher(")
    assert parser["probe_training"]["model"]["network"] == "@network_def"
