"""An exported bundle runs in a fresh virtual environment that holds only torch, monai and the
packages its metadata.json lists (issue 28, item 1): the project is not installed there.

Slow (it installs packages from the configured package index): ``make test-slow``. The reduced
form that runs in the default suite is test_bundle_export.py::test_copied_folder_runs_without_the_project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from bundle_helpers import run_workflow, tiny_settings

from pipeline.bundles.export import export_bundle

pytestmark = pytest.mark.slow


def _run(command, cwd, env, timeout=1800):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_exported_baseline_runs_in_a_venv_without_the_project(tiny_datalist_2d, tmp_path):
    runs = tmp_path / "runs"
    run_workflow("baseline", "train", tiny_settings(tiny_datalist_2d, runs))
    exported = export_bundle("baseline", tmp_path / "export", checkpoint=runs / "baseline" / "models" / "model.pt")
    folder = tmp_path / "elsewhere" / "shortcut_kd_baseline"
    shutil.copytree(exported, folder)
    shutil.rmtree(exported)
    shutil.rmtree(runs)  # the run is gone; only the copied folder and the data remain

    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pins = [f"torch=={meta['pytorch_version']}", f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}"]
    pins += [f"{name}=={version}" for name, version in meta["required_packages_version"].items()]
    _run([python, "-m", "pip", "install", "-q", *pins], tmp_path, env)
    probe = subprocess.run([python, "-c", "import pipeline"], cwd=folder, env=env, capture_output=True, text=True)
    assert probe.returncode != 0, "the project must not be importable in the fresh venv"

    images = tiny_datalist_2d.parent / "images"
    bundle_run = [python, "-m", "monai.bundle", "run", "--config_file"]
    _run([*bundle_run, "configs/inference.yaml", "--input", str(images), "--output_dir", str(tmp_path / "out")], folder, env)
    table = pd.read_csv(tmp_path / "out" / "inference" / "predictions.csv", header=None)
    assert len(table) == len(list(images.glob("*.png")))

    datalist = ["--datalist", str(tiny_datalist_2d)]
    _run([*bundle_run, "configs/evaluate.yaml", *datalist], folder, env)
    assert json.loads((folder / "runs" / "baseline" / "eval" / "metrics.json").read_text())["in_distribution"]["n"] > 0
    shipped = (folder / "models" / "model.pt").read_bytes()
    _run([*bundle_run, "configs/train.yaml", *datalist, "--max_epochs", "1", "--progress_bar", "False"], folder, env)
    assert (folder / "runs" / "baseline" / "models" / "model.pt").is_file()
    assert (folder / "models" / "model.pt").read_bytes() == shipped
