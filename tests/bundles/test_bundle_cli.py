"""The bundles from MONAI's own CLI entry points: run, verify_metadata, ckpt_export; start-up checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from bundle_helpers import tiny_settings, workflow
from monai.bundle import ConfigParser, ckpt_export, verify_metadata

from pipeline.bundles import (
    BUNDLES_ROOT,
    DEFAULT_SCENARIO,
    WORKFLOWS,
    bundle_names,
    cli,
    config_files,
    logging_file,
    meta_file,
    monai_command,
)
from pipeline.distillation.teacher import TeacherSpec, save_teacher
from pipeline.networks import build_network, registered_networks

SCHEMA = BUNDLES_ROOT / "common" / "schema" / "metadata_schema.json"


def test_every_bundle_is_listed_and_has_the_bundle_layout():
    """A repository bundle holds what is its own; every workflow's config files and the logging
    config resolve to existing files (shared ones from common/; export writes the full layout)."""
    assert bundle_names() == ["baseline", "distillation", "teacher"]
    for name in bundle_names():
        folder = BUNDLES_ROOT / name
        for part in ("configs/metadata.json", "configs/train.yaml", "docs/README.md", "LICENSE"):
            assert (folder / part).is_file(), f"{name}: {part} missing"
        for kind in WORKFLOWS:
            files = config_files(name, kind)
            assert all(Path(f).is_file() for f in files), f"{name} {kind}: {files}"
        assert Path(logging_file(name)).is_file()


def test_config_files_merge_the_default_scenario_and_the_shared_workflow_files():
    common = BUNDLES_ROOT / "common" / "configs"
    assert config_files("teacher") == config_files("teacher", scenario=DEFAULT_SCENARIO)
    assert config_files("teacher")[3] == str(common / "scenarios" / f"{DEFAULT_SCENARIO}.yaml")
    # no bundle repeats the shared evaluation/inference file: it alone ends the list
    for name in bundle_names():
        assert config_files(name, "evaluate")[-1] == str(common / "evaluation.yaml")
        assert config_files(name, "inference")[-1] == str(common / "inference.yaml")
        assert logging_file(name) == str(common / "logging.conf")


def test_a_bundle_file_that_exists_is_merged_after_the_shared_one(tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(BUNDLES_ROOT / "common", root / "common")
    own = root / "mine" / "configs"
    own.mkdir(parents=True)
    for part in ("metadata.json", "train.yaml"):
        (own / part).write_text("{}")
    assert config_files("mine", "evaluate", root=root)[-1].endswith("common/configs/evaluation.yaml")
    assert logging_file("mine", root=root) == str(root / "common" / "configs" / "logging.conf")
    for part in ("evaluate.yaml", "inference.yaml", "logging.conf"):
        (own / part).write_text("{}")
    assert config_files("mine", "evaluate", root=root)[-2:] == [
        str(root / "common" / "configs" / "evaluation.yaml"), str(own / "evaluate.yaml")
    ]
    assert config_files("mine", "inference", root=root)[-1] == str(own / "inference.yaml")
    assert logging_file("mine", root=root) == str(own / "logging.conf")


def test_the_scenario_is_the_only_place_data_and_artifact_are_set():
    """Editing base.yaml's artifact used to do nothing in the experiment (the scenario overrode it):
    no shared fragment or bundle config sets what a scenario sets (batch_size: a default)."""
    scenarios = BUNDLES_ROOT / "common" / "configs" / "scenarios"
    keys = {k for f in scenarios.glob("*.yaml") for k in yaml.safe_load(f.read_text())} - {"batch_size"}
    assert {"artifact", "data_source", "data_params", "image_size", "spatial_dims"} <= keys
    for path in BUNDLES_ROOT.glob("*/configs/**/*.yaml"):
        if path.parent != scenarios:
            assert not keys & set(yaml.safe_load(path.read_text()) or {}), path


@pytest.mark.parametrize("bundle", ["baseline", "teacher", "distillation"])
def test_metadata_verifies_against_the_shipped_schema(bundle, tmp_path):
    verify_metadata(meta_file=meta_file(bundle), filepath=str(SCHEMA))
    broken = json.loads(open(meta_file(bundle)).read())
    del broken["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_monai_bundle_run_works_from_another_directory(tiny_datalist_2d, tmp_path):
    settings = tiny_settings(tiny_datalist_2d, "outputs")
    extra = [
        f"--{k}" if i % 2 == 0 else v for k, val in settings.items() for i, v in enumerate((k, repr(val)))
    ]
    command = monai_command("baseline", "train", "localized2d", [], extra)  # the scenario's patch, on purpose
    assert command[1:4] == ["-m", "monai.bundle", "run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "outputs" / "baseline" / "models" / "model.pt").is_file()


def test_ckpt_export_gives_torchscript_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    network = build_network("small_cnn").eval()
    torch.save(network.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=meta_file("baseline"),
        config_file=config_files("baseline"),
        use_trace=True,
        input_shape=[1, 1, 64, 64],
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        expected = network(images)  # traced: the same float32 ops, within rounding of the logits' magnitude
        torch.testing.assert_close(
            scripted(images), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max())
        )


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(registered_networks()))
def test_every_registered_network_is_selectable_by_override(name, spatial_dims):
    parser = ConfigParser()
    parser.read_config(config_files("baseline"))
    # alexnet's original stem needs >= 63 voxels per side; its small-input stem is an option (docs/networks.md)
    options = {"stem_kernel_size": 3, "stem_stride": 1, "stem_padding": 1} if name == "alexnet" else {}
    parser.update({"network_name": name, "spatial_dims": spatial_dims, "network_options": options})
    network = parser.get_parsed_content("network_def")
    size = (32,) * spatial_dims
    with torch.no_grad():
        assert network.eval()(torch.rand(1, 1, *size)).shape == (1, 2)


def _startup_error(bundle, settings):
    with pytest.raises(RuntimeError) as info:
        workflow(bundle, "train", settings)
    message = str(info.value.__cause__ or info.value)
    return message


def test_bad_configs_fail_at_start_up_with_a_clear_message(tiny_datalist_2d, tmp_path):
    settings = tiny_settings(tiny_datalist_2d, tmp_path)
    assert "no_such_net" in _startup_error("baseline", {**settings, "network_name": "no_such_net"})
    missing = tmp_path / "missing.json"
    assert str(missing) in _startup_error("baseline", {**settings, "datalist": str(missing)})
    content = json.loads(tiny_datalist_2d.read_text())
    content["train"][0]["label"] = 2
    for item in (i for role in ("train", "validation") for i in content[role]):
        item["image"] = str(tiny_datalist_2d.parent / item["image"])
    bad_labels = tmp_path / "bad_labels.json"
    bad_labels.write_text(json.dumps(content))
    message = _startup_error("baseline", {**settings, "datalist": str(bad_labels)})
    assert "label 2" in message and "expected 0 or 1" in message


def test_unknown_distillation_stage_fails_at_start_up(tiny_datalist_2d, tmp_path):
    spec = TeacherSpec("small_cnn", 2, 1, 2, ["stage1", "stage2"])
    teacher = tmp_path / "teacher.pt"
    save_teacher(teacher, spec.build_network(), spec.build_probes(), spec)
    settings = tiny_settings(tiny_datalist_2d, tmp_path, teacher_checkpoint=str(teacher))
    message = _startup_error(
        "distillation", {**settings, "stage_pairs": [["stage1", "stage1"], ["layer9", "stage2"]]}
    )
    assert "layer9" in message and "stage1" in message
    message = _startup_error("distillation", {**settings, "stage_pairs": [["stage3", "stage3"]]})
    assert "no fitted probe" in message


def test_bundle_cli_prints_the_monai_command():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.bundles", "teacher", "evaluate", "--print-only", "--max_epochs", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert "monai.bundle run" in line and "evaluation.yaml" in line and line.endswith("--max_epochs 2")


@pytest.mark.parametrize(
    "text, value",
    [("0.5", 0.5), ("[32, 32]", [32, 32]), ("False", False), ("false", False), ("true", True),
     ("null", None), ("None", None), ("teacher", "teacher"), ("/data/x.json", "/data/x.json"),
     ("{stem_stride: 2, act: relu}", {"stem_stride": 2, "act": "relu"}), ("[a, 2]", ["a", 2]),
     ("{'stem_stride': 2}", {"stem_stride": 2})],
)  # fmt: skip
def test_command_line_values_are_literals_json_constants_or_text(text, value):
    """Every command line that overrides config ids (bundles, export, experiment --set, the
    sweeps) reads values the same way; a lowercase ``false`` is False, not the truthy text."""
    from pipeline.bundles import parse_value
    from pipeline.experiment.run import _parse_setting

    assert parse_value(text) == value and type(parse_value(text)) is type(value)
    assert _parse_setting(f"key={text}") == ("key", value)


def test_a_value_that_opens_a_mapping_but_does_not_parse_is_an_error_naming_it():
    """``--set network_options={a: [1}`` must not reach the config as text (a late, obscure error)."""
    import argparse

    from pipeline.bundles import parse_value
    from pipeline.experiment.run import _parse_setting

    with pytest.raises(ValueError, match=r"'\{a: \[1\}'.*not valid YAML"):
        parse_value("{a: [1}")
    with pytest.raises(argparse.ArgumentTypeError, match="--set network_options"):
        _parse_setting("network_options={a: [1}")
    from benchmarks.variant_runs import parse_overrides
    from pipeline.bundles.overrides import parse_overrides as parse_bundle_overrides

    with pytest.raises(ValueError, match="--network_options: value '\\{a: \\[1\\}'"):
        parse_bundle_overrides(["--max_epochs", "2", "--network_options", "{a: [1}"])
    with pytest.raises(SystemExit, match="--set network_options"):
        parse_overrides(["network_options={a: [1}"])


def _cli_error(capsys, *argv):
    """Exit status and message of ``python -m pipeline.bundles ARGV --print-only`` (in this process)."""
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--print-only"])
    return info.value.code, capsys.readouterr().err


def test_a_mistyped_override_key_is_an_error_naming_the_closest_id(capsys):
    """Issue 27, row 1: ``--max_epoch 1`` trained the default 6 epochs and exited 0."""
    code, err = _cli_error(capsys, "baseline", "train", "--max_epoch", "1")
    assert code == 2 and "unknown config id 'max_epoch'" in err and "did you mean 'max_epochs'" in err
    code, err = _cli_error(capsys, "baseline", "train", "--train#dataloaderr#batch_size", "2")
    assert "did you mean 'train#dataloader#batch_size'" in err
    # an id of another bundle is unknown here too: the teacher's init_checkpoint on the baseline
    code, err = _cli_error(capsys, "baseline", "train", "--init_checkpoint", "x.pt")
    assert "unknown config id 'init_checkpoint'" in err and "baseline train" in err
    # argparse must not read `--conf` as an abbreviation of --config
    code, err = _cli_error(capsys, "baseline", "train", "--conf", "1")
    assert "unknown config id 'conf'" in err


@pytest.mark.parametrize(
    "argv, flag",
    [(["--max_epochs"], "--max_epochs"), (["--tensorboard", "--max_epochs", "1"], "--tensorboard"),
     (["--max_epochs", "1", "--seed"], "--seed")],
)  # fmt: skip
def test_a_flag_without_a_value_is_an_error(capsys, argv, flag):
    """Issue 27, rows 3 and 4: ``--max_epochs`` alone became True (1 epoch); a bare flag shifted
    every later key/value pair."""
    code, err = _cli_error(capsys, "baseline", "train", *argv)
    assert code == 2 and f"{flag} has no value" in err


def test_the_fingerprint_and_the_command_come_from_one_reading_of_the_overrides():
    """Issue 27, row 4: the fingerprint paired extra[::2] with extra[1::2] and missed changes."""
    from fire.parser import DefaultParseValue

    def fingerprint(command):
        return command[command.index("--config_fingerprint") + 1]

    one = monai_command("baseline", "train", None, [], ["--seed", "1", "--max_epochs", "1"])
    two = monai_command("baseline", "train", None, [], ["--seed", "1", "--max_epochs", "2"])
    same = monai_command("baseline", "train", None, [], ["--seed=1", "--max_epochs=1"])
    assert fingerprint(one) != fingerprint(two) and fingerprint(one) == fingerprint(same)
    assert one[-4:] == ["--seed", "1", "--max_epochs", "1"] and same[-4:] == one[-4:]
    # what MONAI's CLI (fire) reads back is what the run's fingerprint was computed from
    from pipeline.bundles.overrides import parse_overrides

    args = ["--tensorboard", "false", "--network_name", "a,b", "--seed", "3", "--image_size", "[32, 32]",
            "--bundle_name", "'7'"]  # fmt: skip
    command = monai_command("baseline", "train", None, [], args)
    read = {command[i][2:]: DefaultParseValue(command[i + 1]) for i in range(len(command) - 1) if command[i].startswith("--") and command[i] in args}
    assert read == parse_overrides(args)
    assert read == {"tensorboard": False, "network_name": "a,b", "seed": 3, "image_size": [32, 32], "bundle_name": "7"}


def test_none_reaches_monai_as_an_expression_because_its_cli_drops_none():
    """``python -m monai.bundle run --key None``: fire gives None and MONAI's update_kwargs drops
    the pair (the config keeps its default); the project passes '$None' instead."""
    from monai.bundle import ConfigParser
    from monai.bundle.scripts import update_kwargs

    assert update_kwargs({"init_checkpoint": "x.pt"}, init_checkpoint=None) == {"init_checkpoint": "x.pt"}
    command = monai_command("teacher", "train", None, [], ["--init_checkpoint", "None"])
    value = command[command.index("--init_checkpoint") + 1]
    assert value == "$None"
    parser = ConfigParser({"init_checkpoint": "x.pt", "uses": "@init_checkpoint"})
    parser.update({"init_checkpoint": value})
    assert parser.get_parsed_content("uses") is None


def test_a_second_training_on_the_same_output_stops_at_start_up(tiny_datalist_2d, tmp_path):
    """Issue 27, row 8: two trainings with the same output at once: one crashed, the other's log
    was overwritten. The second stops in initialize, naming the first; a killed one's lock is stale."""
    import os
    import socket

    settings = tiny_settings(tiny_datalist_2d, tmp_path)
    lock = tmp_path / "baseline" / ".lock"
    lock.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "what": "training",
                                    "started": "now", "command": "python -m pipeline.bundles baseline train"}))  # fmt: skip
        message = _startup_error("baseline", settings)
        assert f"{tmp_path / 'baseline'} is in use by another training (pid {other.pid}" in message
    finally:
        other.kill()
        other.wait()
    wf = workflow("baseline", "train", settings)  # that run is gone: its lock is replaced
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    wf.finalize()
    assert not lock.exists()


def _artifact_value(command):
    return command[command.index("--artifact") + 1] if "--artifact" in command else "absent"


def test_own_datalist_without_scenario_or_artifact_injects_nothing(capsys, tmp_path):
    """Issue 28, item 4: the default scenario's corner patch is not put into a user's own images."""
    own = monai_command("baseline", "train", None, [], ["--datalist", "/data/mine/datalist.json"])
    assert _artifact_value(own) == "$None"
    assert "no artifact is injected" in capsys.readouterr().err
    # an explicit choice is kept: a scenario, or an artifact spec
    scenario = monai_command("baseline", "train", "localized2d", [], ["--datalist", "/data/mine/datalist.json"])
    assert _artifact_value(scenario) == "absent"
    spec = "{'_target_': 'pipeline.transforms.GaussianNoiseArtifact', 'std': 0.02}"
    chosen = monai_command("baseline", "train", None, [], ["--datalist", "/d.json", "--artifact", spec])
    assert "GaussianNoiseArtifact" in _artifact_value(chosen)
    # an override file that sets the artifact is a choice too: the command does not undo it
    choice = tmp_path / "mine.yaml"
    choice.write_text("artifact: {_target_: pipeline.transforms.GaussianNoiseArtifact, std: 0.02}\n")
    assert _artifact_value(monai_command("baseline", "train", None, [str(choice)], ["--datalist", "/d.json"])) == "absent"
    other = tmp_path / "other.yaml"
    other.write_text("max_epochs: 2\n")
    assert _artifact_value(monai_command("baseline", "train", None, [str(other)], ["--datalist", "/d.json"])) == "$None"
    capsys.readouterr()
    # the embedded data (no --datalist) is the experiment: the scenario's artifact stays
    assert _artifact_value(monai_command("baseline", "train", None, [], ["--seed", "1"])) == "absent"
    assert capsys.readouterr().err == ""
