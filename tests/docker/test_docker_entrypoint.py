"""docker/entrypoint.py outside Docker: the command each subcommand runs, roots from env, errors."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys

import pytest

from pipeline.bundles import BUNDLES_ROOT, multi_gpu_configs

SCRIPT = BUNDLES_ROOT.parent / "docker" / "entrypoint.py"


@pytest.fixture(scope="module")
def entrypoint():
    spec = importlib.util.spec_from_file_location("shortcut_kd_docker_entrypoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def outputs_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SHORTCUT_KD_OUTPUTS", str(tmp_path / "outputs"))
    return str(tmp_path / "outputs")


def _printed(entrypoint, capsys, *argv) -> list[str]:
    assert entrypoint.main(["--print-only", *argv]) == 0
    return shlex.split(capsys.readouterr().out.strip())


def test_bundle_gets_output_root_from_env_unless_given(entrypoint, capsys, outputs_env):
    command = _printed(entrypoint, capsys, "bundle", "baseline", "train", "--max_epochs", "1")
    assert command == [sys.executable, "-m", "pipeline.bundles", "baseline", "train", "--max_epochs", "1",
                       "--output_root", outputs_env]  # fmt: skip
    for given in (["--output_root", "/elsewhere"], ["--output_root=/elsewhere"]):
        command = _printed(entrypoint, capsys, "bundle", "teacher", "evaluate", *given)
        assert command[-len(given) :] == given and outputs_env not in command


def test_bundle_without_env_passes_arguments_unchanged(entrypoint, capsys, monkeypatch):
    monkeypatch.delenv("SHORTCUT_KD_OUTPUTS", raising=False)
    assert _printed(entrypoint, capsys, "bundle", "baseline")[3:] == ["baseline"]


def test_multi_gpu_runs_torchrun_with_the_bundle_configs_last(entrypoint, capsys, outputs_env):
    command = _printed(entrypoint, capsys, "multi-gpu", "teacher", "--nproc", "2", "--max_epochs", "1")
    assert command[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    program = command[6:]
    assert program[:4] == ["-m", "pipeline.bundles", "teacher", "train"]
    assert program[4:8] == ["--max_epochs", "1", "--output_root", outputs_env]
    assert program[8:] == [a for f in multi_gpu_configs("teacher") for a in ("--config", f)]


def test_multi_gpu_passes_the_rendezvous_of_several_nodes(entrypoint, capsys, outputs_env):
    command = shlex.join(_printed(
        entrypoint, capsys, "multi-gpu", "distillation", "--nproc", "8", "--nnodes", "2", "--node-rank", "1",
        "--rdzv-endpoint", "node0:29400", "--rdzv-id", "kd-42",
    ))  # fmt: skip
    for option in ("--nnodes 2", "--node_rank 1", "--rdzv_backend static", "--rdzv_endpoint node0:29400",
                   "--rdzv_id kd-42"):  # fmt: skip
        assert option in command
    assert "--standalone" not in command


@pytest.mark.parametrize(
    "argv, program",
    [
        (["experiment", "--methods", "erm"], ["-m", "pipeline.experiment", "--methods", "erm"]),
        (["data_prep", "chexpert", "--root", "/src"], ["-m", "data_prep", "chexpert", "--root", "/src"]),
        (["data-prep", "--help"], ["-m", "data_prep", "--help"]),
    ],
)
def test_python_module_commands(entrypoint, capsys, outputs_env, argv, program):
    assert _printed(entrypoint, capsys, *argv) == [sys.executable, *program]


def test_shell_runs_bash_or_the_given_command(entrypoint, capsys):
    assert _printed(entrypoint, capsys, "shell", "ls", "-l") == ["ls", "-l"]
    assert _printed(entrypoint, capsys, "shell")[0].endswith(("bash", "sh"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "unknown command 'train'; commands: bundle, multi-gpu"),
        (["bundle"], "bundle needs a bundle name"),
        (["multi-gpu", "--nproc", "2"], "multi-gpu needs a bundle name"),
        (["multi-gpu", "baseline", "--nnodes", "2"], "rdzv_endpoint"),
        (["multi-gpu", "nope"], "bundle 'nope' not found"),
    ],
)
def test_bad_command_lines_exit_2_with_a_clear_message(entrypoint, capsys, argv, message):
    assert entrypoint.main(["--print-only", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_no_command_prints_usage_and_exits_2(entrypoint, capsys):
    assert entrypoint.main([]) == 2
    assert "Commands:" in capsys.readouterr().err
    assert entrypoint.main(["help"]) == 0
    assert "Commands:" in capsys.readouterr().out


def test_unusable_output_root_is_reported_before_running(entrypoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(entrypoint.UsageError, match="cannot be created"):
        entrypoint.check_output_root({"SHORTCUT_KD_OUTPUTS": str(blocker / "outputs")})
    entrypoint.check_output_root({"SHORTCUT_KD_OUTPUTS": str(tmp_path / "new" / "outputs")})
    assert (tmp_path / "new" / "outputs").is_dir()


def test_command_replaces_the_entrypoint_process_with_env_passed_on(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SHORTCUT_KD_DATA": str(tmp_path / "data")}
    probe = "import os; print('data=' + os.environ['SHORTCUT_KD_DATA'])"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "shell", sys.executable, "-c", probe],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        shlex.join([sys.executable, "-c", probe]),
        f"data={tmp_path / 'data'}",
    ]
    failing = subprocess.run(
        [sys.executable, str(SCRIPT), "shell", sys.executable, "-c", "raise SystemExit(7)"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert failing.returncode == 7
