"""Exported bundles run where the project has never been (issue 28, items 1 and 8): a fresh
virtual environment holding only torch, monai and what each bundle's metadata.json lists, the
folders copied elsewhere, the training data and the runs deleted, and a user's own
``pipeline.py`` and ``data_prep.py`` beside the commands.

Slow (it builds a venv from the package index and the local wheels, and trains three bundles):
``make test-slow``. The reduced form that runs in the default suite is
test_bundle_export.py::test_copied_folder_runs_without_the_project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from bundle_helpers import run_workflow, tiny_settings

from pipeline.bundles.export import export_bundle

pytestmark = pytest.mark.slow
BUNDLES = ("baseline", "teacher", "distillation")
USER_MODULE = "raise ImportError('the user module of the same name was imported')\n"


def _run(command, cwd, env, timeout=1800):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _data(folder: Path, seed: int) -> Path:
    from data_prep.synthetic2d import generate

    return generate(folder, n=64, size=32, seed=seed, teacher_size=16, val_fraction=0.25, test_fraction=0.25,
                    progress=False, verbose=False)  # fmt: skip


@pytest.fixture(scope="module")
def exported_elsewhere(tmp_path_factory):
    """The three bundles trained (one epoch) on data that is then deleted, exported, copied to
    another folder; the exports and the runs deleted. Returns (folder per bundle, user data)."""
    root = tmp_path_factory.mktemp("fresh")
    training_data = _data(root / "training_data", seed=0)
    runs = root / "runs"
    settings = tiny_settings(training_data, runs)
    for bundle, extra in (("baseline", {}), ("teacher", {"probe_epochs": 1}), ("distillation", {})):
        run_workflow(bundle, "train", {**settings, **extra})
    folders = {}
    for bundle in BUNDLES:
        exported = export_bundle(bundle, root / "export" / bundle, checkpoint=runs / bundle / "models" / "model.pt")
        folders[bundle] = root / "elsewhere" / f"shortcut_kd_{bundle}"
        shutil.copytree(exported, folders[bundle])
    for gone in (root / "export", runs, training_data.parent):
        shutil.rmtree(gone)
    return folders, _data(root / "user_data", seed=1)


@pytest.fixture(scope="module")
def fresh_python(exported_elsewhere, tmp_path_factory):
    """A venv with torch, monai, numpy and every bundle's required_packages_version, nothing else."""
    folders, _ = exported_elsewhere
    pins = set()
    for folder in folders.values():
        meta = json.loads((folder / "configs" / "metadata.json").read_text())
        pins |= {f"torch=={meta['pytorch_version']}", f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}"}
        pins |= {f"{name}=={version}" for name, version in meta["required_packages_version"].items()}
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", *sorted(pins)], venv, clean_env())
    return python


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_exported_bundle_runs_in_a_venv_without_the_project(bundle, exported_elsewhere, fresh_python, tmp_path):
    folders, user_data = exported_elsewhere
    folder, env = folders[bundle], clean_env()
    for name in ("pipeline.py", "data_prep.py"):  # item 8: the user's own modules where the commands run
        (folder / name).write_text(USER_MODULE)
    probe = subprocess.run([fresh_python, "-c", "import pipeline"], cwd=folder, env=env, capture_output=True, text=True)
    assert "the user module" in probe.stderr, "only the user's pipeline.py may be importable as `pipeline`"
    probe = subprocess.run([fresh_python, "-c", "import shortcut_kd"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0

    images = user_data.parent / "images"
    bundle_run = [fresh_python, "-m", "monai.bundle", "run", "--config_file"]
    _run([*bundle_run, "configs/inference.yaml", "--input", str(images), "--output_dir", str(tmp_path / "out")], folder, env)
    table = pd.read_csv(tmp_path / "out" / "inference" / "predictions.csv", header=None)
    assert len(table) == len(list(images.glob("*.png")))
    assert table[[1, 2]].sum(axis=1).round(5).eq(1.0).all()

    datalist = ["--datalist", str(user_data)]
    _run([*bundle_run, "configs/evaluate.yaml", *datalist], folder, env)
    metrics = json.loads((folder / "runs" / bundle / "eval" / "metrics.json").read_text())
    assert metrics["in_distribution"]["n"] == len(json.loads(user_data.read_text())["test"])
    shipped = {p.name: p.read_bytes() for p in (folder / "models").iterdir()}
    quick = ["--max_epochs", "1", "--progress_bar", "False", *(["--probe_epochs", "1"] if bundle == "teacher" else [])]
    _run([*bundle_run, "configs/train.yaml", *datalist, *quick], folder, env)
    assert (folder / "runs" / bundle / "models" / "model.pt").is_file()
    assert {p.name: p.read_bytes() for p in (folder / "models").iterdir()} == shipped  # the published weights stay


def test_a_bundle_run_from_the_users_own_folder(exported_elsewhere, fresh_python, tmp_path):
    """Elsewhere, as the exported README says: PYTHONPATH and --bundle_root name the folder, the
    working folder holds the user's pipeline.py and data_prep.py."""
    folders, user_data = exported_elsewhere
    folder = folders["baseline"]
    for name in ("pipeline.py", "data_prep.py"):
        (tmp_path / name).write_text(USER_MODULE)
    env = {**clean_env(), "PYTHONPATH": str(folder)}
    images = user_data.parent / "images"
    _run([fresh_python, "-m", "monai.bundle", "run", "--config_file", str(folder / "configs" / "inference.yaml"),
          "--bundle_root", str(folder), "--input", str(images), "--output_dir", "out"], tmp_path, env)  # fmt: skip
    assert len(pd.read_csv(tmp_path / "out" / "inference" / "predictions.csv", header=None)) == len(list(images.glob("*.png")))
