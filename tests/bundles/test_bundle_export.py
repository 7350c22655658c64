"""Exported bundles are self-contained MONAI bundles: they pass the checks of MONAI model-zoo's CI
(metadata against the shipped schema, network input/output, TorchScript export by scripting)
and every workflow runs alone from the exported folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from bundle_helpers import run_workflow, tiny_settings
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from pipeline.bundles import BUNDLES_ROOT, meta_file
from pipeline.bundles.cli import main
from pipeline.bundles.export import export_bundle
from pipeline.bundles.overrides import parse_overrides
from pipeline.engine.datalist import load_role
from pipeline.networks import build_network, load_checkpoint

SCHEMA = BUNDLES_ROOT / "common" / "schema" / "meta_schema_20240725.json"
BUNDLES = ("baseline", "teacher", "distillation")


def export_settings(datalist):
    """The tiny run's settings, less its output root (the export puts outputs in the bundle)."""
    settings = tiny_settings(datalist, "unused")
    del settings["output_root"]
    return settings


@pytest.fixture(scope="module")
def trained_run(tiny_datalist_2d, tmp_path_factory):
    """A baseline trained for one epoch and evaluated: models/model.pt and eval/metrics.json."""
    root = tmp_path_factory.mktemp("runs")
    settings = tiny_settings(tiny_datalist_2d, root)
    run_workflow("baseline", "train", settings)
    run_workflow("baseline", "evaluate", settings)
    return root / "baseline"


@pytest.fixture(scope="module")
def exported(trained_run, tiny_datalist_2d, tmp_path_factory):
    """The trained baseline exported through the command line."""
    out = tmp_path_factory.mktemp("export") / "shortcut_kd_baseline"
    argv = ["export", "baseline", "--out", str(out), "--checkpoint", str(trained_run / "models" / "model.pt")]
    for key, value in export_settings(tiny_datalist_2d).items():
        argv += [f"--{key}", str(value)]
    assert main(argv) == 0
    return out


def read_yaml(path):
    return yaml.safe_load(path.read_text())


def test_exported_folder_is_self_contained(exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith("scripts/")} == {
        "LICENSE",
        "configs/train.yaml",
        "configs/evaluate.yaml",
        "configs/inference.yaml",
        "configs/multi_gpu_train.yaml",
        "configs/audit.yaml",
        "configs/metadata.json",
        "configs/logging.conf",
        "docs/README.md",
        "models/model.pt",
        "large_files.yml",
    }
    # the project's code the configs call, renamed under scripts/ (no training-only experiment code)
    assert {"scripts/__init__.py", "scripts/pipeline/networks/registry.py", "scripts/pipeline/engine/datalist.py"} <= files
    assert not any(f.startswith("scripts/pipeline/experiment") for f in files)
    shipped = (exported / "scripts" / "pipeline" / "networks" / "__init__.py").read_text()
    assert "from scripts.pipeline.networks" in shipped and "from pipeline." not in shipped
    assert not any(p.is_symlink() for p in exported.rglob("*"))
    assert (exported / "LICENSE").read_text() == (BUNDLES_ROOT.parent / "LICENSE").read_text()
    assert not list(exported.parent.glob(".*.tmp"))  # the staging folder was renamed
    for workflow in ("train", "evaluate", "inference"):
        text = (exported / "configs" / f"{workflow}.yaml").read_text()
        assert str(BUNDLES_ROOT) not in text and "BUNDLES_ROOT" not in text and "bundles/common" not in text
        config = read_yaml(exported / "configs" / f"{workflow}.yaml")
        assert config["bundle_root"] == "."
        assert config["output_root"] == "$@bundle_root + '/runs'"
        assert {"run", "initialize", "network_def"} <= set(config)
    for workflow in ("evaluate", "inference"):
        config = read_yaml(exported / "configs" / f"{workflow}.yaml")
        assert config["checkpoint"] == "$@bundle_root + '/models/model.pt'"
        assert "train" not in config and "optimizer" not in config  # training entries left out
    inference = read_yaml(exported / "configs" / "inference.yaml")
    assert "$import scripts.pipeline as pipeline" in inference["imports"]
    assert inference["scaling_range"] == [0.0, 255.0]  # the run's range, as a value: no datalist read
    assert not any("import pipeline" in line or "data_prep" in line for line in inference["imports"])


def test_exported_weights_are_the_runs_weights(exported, trained_run):
    network = build_network("small_cnn", 2, 1, 2)
    load_checkpoint(network, trained_run / "models" / "model.pt")
    exported_weights = torch.load(exported / "models" / "model.pt", weights_only=True)
    assert exported_weights.keys() == network.state_dict().keys()
    assert all(torch.equal(exported_weights[k], v) for k, v in network.state_dict().items())


def test_exported_metadata_passes_the_schema_and_holds_the_runs_metrics(exported, trained_run):
    verify_metadata(meta_file=str(exported / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    run_metrics = json.loads((trained_run / "eval" / "metrics.json").read_text())
    assert meta["eval_metrics"]["bias_free_auc"] == pytest.approx(run_metrics["bias_free"]["auc"], rel=1e-9)
    assert meta["eval_metrics"]["in_distribution_accuracy"] == pytest.approx(
        run_metrics["in_distribution"]["accuracy"], rel=1e-9
    )
    packages = meta["required_packages_version"]
    assert "shortcut-kd" not in packages  # no index has it: the code ships in scripts/
    assert {"fire", "pyyaml", "jsonschema", "pytorch-ignite", "pandas"} <= set(packages)
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["spatial_shape"] == [32, 32]  # the run's size, from its run_settings.json
    assert image["modality"] == "XR" and image["num_channels"] == 1
    assert "synthetic 2D" in meta["data_source"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "opacity"}
    large = read_yaml(exported / "large_files.yml")["large_files"]
    assert [entry["path"] for entry in large] == ["models/model.pt"] and len(large[0]["hash_val"]) == 32
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "logits" and len(pred["value_range"]) == 2
    readme = (exported / "docs" / "README.md").read_text()
    for section in ("Overview", "Data", "Training", "Performance", "Commands", "References", "License"):
        assert f"\n## {section}\n" in readme
    assert f"{run_metrics['bias_free']['auc']:.3f}" in readme


def test_model_zoo_full_checks_pass(exported, tmp_path):
    """verify_bundle.py's full mode: network in/out from configs/inference.yaml, then ckpt_export
    by scripting (its default) with bundle_root set to the folder."""
    common = dict(
        meta_file=str(exported / "configs" / "metadata.json"),
        config_file=str(exported / "configs" / "inference.yaml"),
        bundle_root=str(exported),
    )
    with bundle_code(exported):
        verify_net_in_out(net_id="network_def", **common)
        ckpt_export(
            net_id="network_def",
            filepath=str(tmp_path / "model.ts"),
            ckpt_file=str(exported / "models" / "model.pt"),
            **common,
        )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    network = build_network("small_cnn", 2, 1, 2).eval()
    load_checkpoint(network, exported / "models" / "model.pt")
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(x)
        assert torch.allclose(scripted(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


@contextlib.contextmanager
def bundle_code(folder):
    """``folder``'s scripts/ importable afresh, as on the sys.path of a command run inside it."""
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def run_in_folder(folder, workflow, workflow_type, **overrides):
    """What `python -m monai.bundle run --config_file configs/<workflow>.yaml` does in ``folder``."""
    with bundle_code(folder):
        wf = ConfigWorkflow(config_file=f"configs/{workflow}.yaml", workflow_type=workflow_type, **overrides)
        wf.initialize()
        wf.run()
        wf.finalize()
    return wf


def test_workflows_run_alone_inside_the_folder(
    exported, trained_run, tiny_datalist_2d, tmp_path, monkeypatch
):
    folder = tmp_path / "bundle"
    shutil.copytree(exported, folder)  # a copy: training replaces models/model.pt
    monkeypatch.chdir(folder)
    wf = run_in_folder(folder, "evaluate", "infer")
    assert wf.parser.get_parsed_content("bundle_root") == "."
    metrics = json.loads((folder / "runs" / "baseline" / "eval" / "metrics.json").read_text())
    run_metrics = json.loads((trained_run / "eval" / "metrics.json").read_text())
    for test_set in ("in_distribution", "bias_free", "bias_inverted"):  # same weights, same data
        assert metrics[test_set]["auc"] == pytest.approx(run_metrics[test_set]["auc"], rel=1e-6)

    run_in_folder(folder, "inference", "infer")
    table = pd.read_csv(folder / "runs" / "baseline" / "inference" / "predictions.csv", header=None)
    assert len(table) == len(load_role(tiny_datalist_2d, "test"))
    assert table[[1, 2]].sum(axis=1).round(5).eq(1.0).all()
    images = tiny_datalist_2d.parent / "images"
    run_in_folder(
        folder, "inference", "infer", input=str(images), inference_dir=str(tmp_path / "folder_input")
    )
    table = pd.read_csv(tmp_path / "folder_input" / "predictions.csv", header=None)
    assert len(table) == len(list(images.glob("*.png")))

    shipped = (folder / "models" / "model.pt").read_bytes()
    wf = run_in_folder(folder, "train", "train")
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (folder / "runs" / "baseline" / "models" / "checkpoint_final.pt").is_file()
    assert (folder / "runs" / "baseline" / "models" / "model.pt").is_file()
    assert (folder / "models" / "model.pt").read_bytes() == shipped  # the published weights stay


@pytest.mark.parametrize(
    "bundle,scenario", [("teacher", None), ("distillation", None), ("baseline", "localized3d")]
)
def test_every_bundle_exports_without_weights(bundle, scenario, tmp_path):
    out = export_bundle(bundle, tmp_path / bundle, scenario=scenario)
    meta_path = out / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_path), filepath=str(SCHEMA))
    with bundle_code(out):
        verify_net_in_out(
            net_id="network_def", meta_file=str(meta_path), config_file=str(out / "configs" / "inference.yaml")
        )
    meta = json.loads(meta_path.read_text())
    assert meta["eval_metrics"] == {}
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == (
        [32] * 3 if scenario else [64] * 2
    )
    assert not (out / "models" / "model.pt").exists()
    train = read_yaml(out / "configs" / "train.yaml")
    if bundle == "distillation":
        assert train["teacher_checkpoint"] == "$@bundle_root + '/models/teacher.pt'"
    assert "Performance" in (out / "docs" / "README.md").read_text()


def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"out exists and is not an empty folder"):
        export_bundle("baseline", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_checkpoint_that_does_not_fit_the_config_is_refused(trained_run, tmp_path):
    alone = tmp_path / "old_run" / "model.pt"  # a run that recorded no run_settings.json
    alone.parent.mkdir()
    shutil.copyfile(trained_run / "models" / "model.pt", alone)
    with pytest.raises(ValueError, match=r"model\.pt does not fit the exported network \(resnet18"):
        export_bundle("baseline", tmp_path / "out", checkpoint=alone, settings={"network_name": "resnet18"})
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old_run"]  # no staging folder left


def test_settings_that_contradict_the_run_are_refused(trained_run, tmp_path):
    checkpoint = trained_run / "models" / "model.pt"
    with pytest.raises(ValueError, match=r"--image_size \[64, 64\] contradicts the run, which trained with image_size=\[32, 32\]"):
        export_bundle("baseline", tmp_path / "a", checkpoint=checkpoint, settings={"image_size": [64, 64]})
    with pytest.raises(ValueError, match=r"--artifact None contradicts the run"):
        export_bundle("baseline", tmp_path / "b", checkpoint=checkpoint, settings={"artifact": None})
    # agreeing values (ints for floats) are accepted
    out = export_bundle("baseline", tmp_path / "c", checkpoint=checkpoint, settings={"image_size": [32.0, 32]})
    assert read_yaml(out / "configs" / "train.yaml")["artifact"]["_target_"] == "scripts.pipeline.transforms.PatchArtifact"


def test_copied_folder_runs_without_the_project(exported, tiny_datalist_2d, tmp_path):
    """The CI form of item 1: `python -m monai.bundle run` in a copy of the folder, with a user's
    own pipeline.py and data_prep.py first on the path, so the project cannot be what runs."""
    folder = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(exported, folder)
    user = tmp_path / "user"
    user.mkdir()
    for name in ("pipeline.py", "data_prep.py"):
        (user / name).write_text("raise ImportError('a user module of the same name')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(user)
    probe = subprocess.run([sys.executable, "-c", "import pipeline.networks"], cwd=folder, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "a user module" in probe.stderr
    images = tiny_datalist_2d.parent / "images"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
               "--input", str(images), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "inference" / "predictions.csv", header=None)
    assert len(table) == len(list(images.glob("*.png")))


def model_zoo_ci() -> Path | None:
    """The folder of model-zoo's CI scripts: $MODEL_ZOO_CI, else ``shared/tools/model-zoo-ci`` in
    the checkout or a folder above it (``../shared`` of a checkout, or of a worktree's parent)."""
    if os.environ.get("MODEL_ZOO_CI"):
        return Path(os.environ["MODEL_ZOO_CI"])
    for folder in BUNDLES_ROOT.parents:
        tool = folder / "shared" / "tools" / "model-zoo-ci"
        if (tool / "verify_bundle.py").is_file():
            return tool
    return None


def test_copied_folder_passes_model_zoo_ci(exported, tmp_path):
    """../shared/tools/model-zoo-ci/verify_bundle.py, run exactly as model-zoo's CI runs it."""
    tool = model_zoo_ci()
    if tool is None:
        pytest.skip("model-zoo CI tool not found ($MODEL_ZOO_CI, or shared/tools/model-zoo-ci beside the checkout)")
    (tmp_path / "ci").mkdir()
    for script in tool.glob("*.py"):
        shutil.copyfile(script, tmp_path / "ci" / script.name)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model_info.json").write_text("{}")
    bundle = tmp_path / "models" / "shortcut_kd_baseline"
    shutil.copytree(exported, bundle)
    (bundle / "eval").mkdir()
    shutil.copyfile(tool / "meta_schema_20240725.json", bundle / "eval" / "schema.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # `full` runs every check of `min` (folder, version and changelog, metadata), then the network's
    # input/output and the TorchScript export
    command = [sys.executable, "ci/verify_bundle.py", "-b", "shortcut_kd_baseline", "-p", "models", "-m", "full"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for check in ("directory is verified", "version and changelog are verified", "metadata format is verified",
                  "data shape is verified", "export weights into TorchScript module successfully"):  # fmt: skip
        assert check in done.stdout, check


def test_missing_checkpoint_and_unknown_bundle_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint .*nope\.pt does not exist"):
        export_bundle("baseline", tmp_path / "a", checkpoint=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=r"bundle 'common' not found"):
        export_bundle("common", tmp_path / "b")


def test_command_line_settings_are_read_as_literals():
    assert parse_overrides(["--image_size", "[32, 32]", "--datalist", "/d/x.json", "--amp", "True"]) == {
        "image_size": [32, 32],
        "datalist": "/d/x.json",
        "amp": True,
    }
    with pytest.raises(ValueError, match="--image_size has no value"):
        parse_overrides(["--image_size"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_repository_metadata_describes_logits_and_names_this_package(bundle):
    verify_metadata(meta_file=meta_file(bundle), filepath=str(SCHEMA))
    meta = json.loads(open(meta_file(bundle)).read())
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "logits" and "logits" in meta["pred_classes"]
    assert len(pred["value_range"]) == 2 and pred["value_range"][0] < 0 < pred["value_range"][1]
    assert "eval_metrics" in meta
    assert "shortcut-kd" in meta["required_packages_version"]
