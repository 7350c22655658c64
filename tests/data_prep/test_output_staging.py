"""Staging: a killed data_prep leaves no folder for ever, and a datalist never meets other images."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from data_prep import embedded, output_staging, synthetic2d
from data_prep.output_staging import STAGING_PATTERNS, staged_output
from pipeline.atomic import STALE_AFTER_S, remove_stale_staging, staging_name

PARAMS = dict(n=20, size=16, teacher_size=2, progress=False, verbose=False)

_STAGE_AND_HANG = """
import sys, time
from data_prep.output_staging import staged_output
with staged_output(sys.argv[1], overwrite=True) as staging:
    (staging / "images").mkdir()
    print(staging, flush=True)
    time.sleep(600)
"""


def _killed_while_staging(out_dir):
    """Start a process that stages into ``out_dir``, kill it (SIGKILL), return its staging folder."""
    process = subprocess.Popen(
        [sys.executable, "-c", _STAGE_AND_HANG, str(out_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(output_staging.__file__)),
    )
    try:
        staging = process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert staging, "the child process did not start staging"
    return out_dir / os.path.basename(staging)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_staging_folder_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    left = _killed_while_staging(out)
    assert left.is_dir()  # the kill left it behind
    synthetic2d.generate(out, **PARAMS)
    assert not left.exists()
    assert sorted(p.name for p in out.iterdir()) == ["datalist.json", "datalist_summary.csv", "images"]


def test_staging_folders_of_live_processes_are_kept_and_old_ones_removed(tmp_path):
    mine = tmp_path / staging_name(".staging-")  # this process: alive
    other_host = tmp_path / ".staging-elsewhere.1.0123456789abcdef0123456789abcdef"
    legacy = tmp_path / ".staging-0123456789abcdef0123456789abcdef"
    unrelated = tmp_path / ".cache-1"
    for folder in (mine, other_host, legacy, unrelated):
        (folder / "images").mkdir(parents=True)
    assert remove_stale_staging(tmp_path, STAGING_PATTERNS) == []
    old = time.time() - STALE_AFTER_S - 60
    for folder in (other_host, legacy, unrelated):
        for path in (folder, folder / "images"):
            os.utime(path, (old, old))
    assert sorted(p.name for p in remove_stale_staging(tmp_path, STAGING_PATTERNS)) == sorted([legacy.name, other_host.name])
    assert mine.is_dir() and unrelated.is_dir()


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_embedded_cache_temporary_folder_of_a_killed_run_is_removed(tmp_path):
    final = embedded.dataset_folder("synthetic2d", tmp_path, n=20, size=16, teacher_size=2)
    left = _killed_while_staging(tmp_path / "killed")
    stale = tmp_path / f".{final.name}.tmp-{left.name.split('-', 1)[1]}"
    os.rename(left.parent, stale)  # as if ensure_dataset's temporary folder (named like staging ones)
    embedded.ensure_dataset("synthetic2d", root=tmp_path, progress=False, n=20, size=16, teacher_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_datalist_is_never_newer_or_older_than_its_images(tmp_path, monkeypatch):
    """Killed between moving the new images in and the new datalist: no datalist refers to them."""
    out = tmp_path / "out"
    synthetic2d.generate(out, seed=0, **PARAMS)
    real_replace = os.replace

    def die_before_the_datalist(source, target):
        if os.fspath(target) == os.fspath(out / "datalist.json"):
            raise KeyboardInterrupt("killed")
        real_replace(source, target)

    monkeypatch.setattr(output_staging.os, "replace", die_before_the_datalist)
    with pytest.raises(KeyboardInterrupt):
        synthetic2d.generate(out, seed=1, overwrite=True, **PARAMS)
    monkeypatch.undo()
    assert (out / "images").is_dir()  # the new images are in place
    assert not (out / "datalist.json").exists()  # the old one, which described the old images, is gone
    assert not embedded.is_complete(out)
    path = synthetic2d.generate(out, seed=1, overwrite=True, **PARAMS)
    assert json.loads(path.read_text())["metadata"]["seed"] == 1


def test_failed_staging_leaves_out_dir_as_it_was(tmp_path):
    out = tmp_path / "out"
    path = synthetic2d.generate(out, **PARAMS)
    before = path.read_text()
    with pytest.raises(RuntimeError), staged_output(out, overwrite=True) as staging:
        (staging / "datalist.json").write_text("{}")
        raise RuntimeError("generator failed")
    assert path.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["datalist.json", "datalist_summary.csv", "images"]
