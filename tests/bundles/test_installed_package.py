"""`pip install .` (not editable) runs the bundles and the README's commands where no checkout is
(issue 28, item 5): the configs, LICENSE and the bundles' files come from the package data under
``<prefix>/share/shortcut-kd``, with no ``SHORTCUT_KD_BUNDLES``.

Slow: it installs the project into a new venv (its dependencies are this interpreter's, reached
through a path file as with ``--system-site-packages``), then runs the commands there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "pipeline", "data_prep", "bundles")
# repository tools run from a checkout (`python -m benchmarks...`, the tests), not installed by the package
CHECKOUT_ONLY = ("benchmarks", "tests", "pytest", "monai")

pytestmark = pytest.mark.slow


def _run(command, cwd, env, timeout=1200):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def readme_modules() -> list[str]:
    """The modules the README runs with `python -m`, less the checkout-only ones."""
    found = re.findall(r"python -m ([\w.]+)", (REPO / "README.md").read_text())
    return [m for m in dict.fromkeys(found) if m.split(".")[0] not in CHECKOUT_ONLY]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a venv with the project installed from a copy of the checkout, a clean env)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "checkout"
    source.mkdir()
    for name in SOURCES:  # a copy: the build writes build/ and *.egg-info beside the sources
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip and setuptools: ours
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SHORTCUT_KD_BUNDLES")}
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--ignore-installed",
          "--no-build-isolation", str(source)], root, env)  # fmt: skip
    shutil.rmtree(source)  # no checkout left anywhere the package could find
    return python, env, Path(purelib), venv


def test_the_installed_package_is_the_one_that_runs(installed, tmp_path):
    python, env, purelib, venv = installed
    where = _run([python, "-c", "import pipeline, data_prep, pipeline.bundles as b; print(pipeline.__file__); "
                  "print(data_prep.__file__); print(b.BUNDLES_ROOT)"], tmp_path, env).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(purelib) and Path(where[1]).is_relative_to(purelib)
    assert Path(where[2]) == venv / "share" / "shortcut-kd" / "bundles"


@pytest.mark.parametrize("module", readme_modules())
def test_every_readme_command_starts(installed, module, tmp_path):
    python, env, _, _ = installed
    done = _run([python, "-m", module, "--help"], tmp_path, env)
    assert "usage" in done.stdout.lower()


def test_bundles_train_and_export_from_the_package_data(installed, tiny_datalist_2d, tmp_path):
    python, env, _, venv = installed
    printed = _run([python, "-m", "pipeline.bundles", "teacher", "train", "--print-only"], tmp_path, env).stdout
    assert str(venv / "share" / "shortcut-kd" / "bundles" / "teacher" / "configs" / "train.yaml") in printed
    tiny = ["--datalist", str(tiny_datalist_2d), "--image_size", "[32, 32]", "--max_epochs", "1",
            "--progress_bar", "False", "--tensorboard", "False", "--output_root", "runs"]  # fmt: skip
    _run([python, "-m", "pipeline.bundles", "baseline", "train", *tiny], tmp_path, env)
    checkpoint = tmp_path / "runs" / "baseline" / "models" / "model.pt"
    assert checkpoint.is_file()
    _run([python, "-m", "pipeline.bundles", "export", "baseline", "--out", "exported", "--checkpoint", str(checkpoint)],
         tmp_path, env)  # fmt: skip
    assert (tmp_path / "exported" / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert (tmp_path / "exported" / "scripts" / "pipeline" / "networks" / "__init__.py").is_file()
