"""Issue 27: a full or read-only disk in a training or an export is one line naming what and
where (exit 2), with nothing half-written; a killed export's staging folder goes with the next export."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.atomic import STALE_AFTER_S
from pipeline.bundles import cli
from pipeline.bundles import export as bundle_export

REPO = Path(__file__).resolve().parents[2]
STREAM_WRITER = "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed"


@pytest.mark.usefixtures("isolated_logging")
@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checkpoint.pt"), RuntimeError(STREAM_WRITER)],
    ids=["disk-full", "stream-writer"],
)
def test_a_training_that_cannot_write_its_checkpoint_is_one_line(error, tiny_datalist_2d, tmp_path, capsys, monkeypatch):
    """``python -m pipeline.bundles baseline train`` on a full disk: MONAI's traceback (or
    inline_container.cc's message) before; now one line and exit 2, and no checkpoint, whole or
    partial, in models/."""

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full)
    argv = ["baseline", "train", "--datalist", str(tiny_datalist_2d), "--output_root", str(tmp_path),
            "--image_size", "[32, 32]", "--max_epochs", "1", "--batch_size", "16", "--progress_bar", "false",
            "--tensorboard", "false"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    line = err[-1]
    assert line.startswith("python -m pipeline.bundles: error: ")
    if isinstance(error, OSError):
        assert "cannot write checkpoint.pt: disk full (No space left on device)" in line
    else:
        assert "a model or checkpoint could not be written" in line and "PytorchStreamWriter failed" in line
    models = tmp_path / "baseline" / "models"
    assert sorted(p.name for p in models.iterdir() if p.name != ".lock") == ["run_settings.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_an_export_that_cannot_write_is_one_line_and_leaves_nothing(code, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exported"
    real_copy = bundle_export.shutil.copyfile

    def fail_on_the_license(source, target):
        if Path(target).name == "LICENSE":
            raise OSError(code, os.strerror(code), str(target))
        return real_copy(source, target)

    monkeypatch.setattr(bundle_export.shutil, "copyfile", fail_on_the_license)
    with pytest.raises(SystemExit) as info:
        bundle_export.main(["baseline", "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert f"cannot write {tmp_path}/.exported.export-" in err and os.strerror(code) in err
    assert f"{out} was not written" in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging folder


_EXPORT_AND_HANG = """
import sys, time
from pipeline.bundles import export

def hang(configs, staging):
    print(staging, flush=True)
    time.sleep(600)

export.vendor.ship_code = hang
export.export_bundle("baseline", sys.argv[1])
"""


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_the_staging_folder_of_a_killed_export_is_removed_by_the_next_export(tmp_path):
    """Issue 27, row 12: SIGKILL during export, then rerun: the staging folder stayed for ever."""
    out = tmp_path / "exported"
    process = subprocess.Popen([sys.executable, "-c", _EXPORT_AND_HANG, str(out)], stdout=subprocess.PIPE,
                               text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        staging = Path(process.stdout.readline().strip())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert staging.parent == tmp_path and staging.is_dir()  # the kill left it behind
    live = tmp_path / bundle_export.staging_name(".exported.export-")  # this process: still running
    live.mkdir()
    other = tmp_path / ".other.export-host.1.0123456789abcdef0123456789abcdef"  # another export's folder
    other.mkdir()
    old_form = tmp_path / ".exported.a1b2c3d4.tmp"  # tempfile.mkdtemp's name, before the pid was in it
    old_form.mkdir()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(old_form, (old, old))
    os.utime(other, (old, old))
    bundle_export.export_bundle("baseline", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])
    assert (out / "configs" / "train.yaml").is_file()
