"""Training bundles under faults: a killed run resumed, resume refused for another config,
non-finite images and losses stopped with a clear message and no model written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import assert_same_weights, tiny_settings

from pipeline.bundles import monai_command, run_bundle
from pipeline.engine.finite_checks import NonFiniteError
from pipeline.engine.resumable_checkpoint import ResumeError

REPO = Path(__file__).resolve().parents[2]
# random augmentation, so that an exact resume needs the transforms' random state
AUGMENTATION = [{"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.5, "std": 0.1}]


def _cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _settings(datalist, root, **extra):
    return tiny_settings(datalist, root, size=16, batch_size=8, precise_bn_batches=2, **extra)


def _command(datalist, root, **extra):
    settings = _settings(datalist, root, **{"max_epochs": 4, "augmentation": AUGMENTATION, **extra})
    args = [a for k, v in settings.items() for a in (f"--{k}", repr(v) if not isinstance(v, str) else v)]
    return monai_command("baseline", "train", None, [], args)


def _run(command, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs
    )


def _final_network(root) -> dict:
    return torch.load(Path(root) / "baseline" / "models" / "checkpoint_final.pt", weights_only=True)[
        "network"
    ]


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tiny_datalist_2d, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    models = killed / "baseline" / "models"
    # an older finished run of another config in the killed run's folder must not be resumed from
    older = _run(_command(tiny_datalist_2d, killed, max_epochs=1, seed=5))
    assert older.wait(timeout=300) == 0, older.stdout.read().decode()[-2000:]
    older_mtime = (models / "checkpoint_epoch=1.pt").stat().st_mtime_ns
    uninterrupted = _run(_command(tiny_datalist_2d, whole))
    first = _run(_command(tiny_datalist_2d, killed))
    deadline = time.monotonic() + 300
    while (models / "checkpoint_epoch=1.pt").stat().st_mtime_ns == older_mtime:
        assert first.poll() is None and time.monotonic() < deadline, (
            "the run ended before its first epoch saved"
        )
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved_epochs = [int(p.stem.split("=")[1]) for p in models.glob("checkpoint_epoch=*.pt")]
    assert max(saved_epochs) < 4, "killed too late: the run had finished"

    resumed = _run(_command(tiny_datalist_2d, killed, resume=True))
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, "\n".join(line for line in output.splitlines() if "Error" in line)
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stdout.read().decode()[-2000:]
    trainer = torch.load(models / "checkpoint_final.pt", weights_only=True)["trainer"]
    assert trainer["iteration"] == 4 * trainer["epoch_length"]
    assert_same_weights(_final_network(killed), _final_network(whole))
    best_killed = torch.load(models / "model.pt", weights_only=True)
    best_whole = torch.load(whole / "baseline" / "models" / "model.pt", weights_only=True)
    assert_same_weights(best_killed, best_whole)


def test_resume_without_a_per_epoch_checkpoint_says_so(tiny_datalist_2d, tmp_path):
    with pytest.raises(RuntimeError) as info:
        run_bundle("baseline", "train", settings=_settings(tiny_datalist_2d, tmp_path, resume=True))
    error = _cause(info.value)
    assert isinstance(error, ResumeError)
    assert str(tmp_path / "baseline" / "models") in str(error) and "checkpoint_epoch" in str(error)


@pytest.mark.parametrize("bundle", ["baseline", "teacher", "distillation"])
def test_resume_refuses_a_checkpoint_of_another_config(tiny_datalist_2d, tmp_path, bundle):
    settings = _settings(tiny_datalist_2d, tmp_path, probe_epochs=1)
    if bundle == "distillation":
        run_bundle("teacher", "train", settings=settings)
    run_bundle(bundle, "train", settings=settings)
    models = tmp_path / bundle / "models"
    assert (models / "checkpoint_epoch=1.pt").is_file()
    before = (models / "checkpoint_final.pt").read_bytes()
    for changed in ({"max_epochs": 2}, {"seed": 7}, {"learning_rate": 0.01}):
        with pytest.raises(RuntimeError) as info:
            run_bundle(bundle, "train", settings={**settings, **changed, "resume": True})
        error = _cause(info.value)
        assert isinstance(error, ResumeError) and "another configuration" in str(error), changed
        assert str(models / "checkpoint_epoch=1.pt") in str(error)
    assert (models / "checkpoint_final.pt").read_bytes() == before
    # the same config resumes (nothing left to train)
    run_bundle(bundle, "train", settings={**settings, "resume": True})


def test_a_nan_volume_stops_the_3d_bundle_naming_the_file(tmp_path):
    from data_prep.simba3d import generate

    datalist = generate(
        tmp_path / "data",
        n=16,
        size=8,
        seed=0,
        teacher_size=2,
        val_fraction=0.25,
        progress=False,
        verbose=False,
    )
    content = json.loads(datalist.read_text())
    bad = datalist.parent / content["train"][0]["image"]
    volume = nib.load(bad)
    nib.save(nib.Nifti1Image(np.full(volume.shape, np.nan, np.float32), volume.affine), bad)
    settings = tiny_settings(
        datalist, tmp_path / "runs", spatial_dims=3, size=8, batch_size=4, precise_bn_batches=1
    )
    with pytest.raises(RuntimeError) as info:
        run_bundle("baseline", "train", settings=settings)
    error = _cause(info.value)
    assert isinstance(error, NonFiniteError) and str(bad) in str(error)
    assert not (tmp_path / "runs" / "baseline" / "models" / "model.pt").exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_old_model(tiny_datalist_2d, tmp_path):
    models = tmp_path / "baseline" / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"an earlier model")
    nan_loss = "$torch.nn.CrossEntropyLoss(weight=torch.tensor([float('nan'), 1.0]))"
    with pytest.raises(RuntimeError) as info:
        run_bundle("baseline", "train", settings=_settings(tiny_datalist_2d, tmp_path, loss=nan_loss))
    error = _cause(info.value)
    assert isinstance(error, NonFiniteError)
    assert "epoch 1, iteration 1" in str(error) and "batch sample ids" in str(error)
    assert (models / "model.pt").read_bytes() == b"an earlier model"
    assert not list(models.glob("checkpoint_epoch=*.pt"))
