"""The SimBA-like 3D generator: offline template, NIfTI affine, effects, determinism."""

import dataclasses
import hashlib
import json
import socket

import nibabel as nib
import numpy as np
import pytest

from data_prep import simba3d

SMALL = dict(n=8, size=16, teacher_size=1, val_fraction=0.25, test_fraction=0.25, progress=False, verbose=False)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """8 volumes of 16^3, generated with every network connection refused."""
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError("simba3d tried to open a network connection")

    socket.socket.connect = refuse
    simba3d.template.cache_clear()
    try:
        return simba3d.generate(tmp_path_factory.mktemp("simba3d"), seed=2, **SMALL)
    finally:
        socket.socket.connect = original


def test_volumes_have_size_affine_and_mni_codes(volumes):
    content = json.loads(volumes.read_text())
    meta = content["metadata"]
    assert (meta["spatial_dims"], meta["channels"], meta["image_size"]) == (3, 1, [16, 16, 16])
    first = volumes.parent / content["train"][0]["image"]
    image = nib.load(first)
    assert image.shape == (16, 16, 16)
    assert np.allclose(image.affine, meta["affine"])
    assert 10 < meta["voxel_size_mm"] < 14  # ~190 mm brain box / 16 voxels
    assert image.header.get_sform(coded=True)[1] == simba3d.MNI_CODE
    data = image.get_fdata()
    assert data.max() > 0.5 and abs(np.median(data[0])) < 0.1  # brain inside, background ~0 at the border


def test_all_volumes_listed_and_labels_balanced(volumes):
    content = json.loads(volumes.read_text())
    items = [item for role in ("train", "teacher", "validation", "test") for item in content[role]]
    assert len({item["id"] for item in items}) == 8
    assert sum(item["label"] for item in items) == 4
    positives = [item["disease_coefficient"] for item in items if item["label"] == 1]
    negatives = [item["disease_coefficient"] for item in items if item["label"] == 0]
    assert np.mean(positives) > np.mean(negatives)


def test_same_seed_same_volumes(volumes, tmp_path):
    again = simba3d.generate(tmp_path, seed=2, **SMALL)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (again.parent / "images").iterdir()}
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (volumes.parent / "images").iterdir()}
    assert digest == before


def test_disease_mode_is_local_and_subject_modes_are_global():
    centre = np.array([8.0, 8.0, 8.0])
    field = simba3d.disease_mode(16, centre, radius_vox=2.0)
    norm = np.linalg.norm(field, axis=0)
    assert norm.max() == pytest.approx(1.0, abs=1e-5)
    assert norm[8, 8, 15] < 0.05 and norm[8, 8, 10] > 0.5
    assert field[0, 10, 8, 8] > 0 > field[0, 6, 8, 8]  # radial (outward sampling = atrophy)
    modes = simba3d.subject_modes(16, 3, seed=0)
    assert modes.shape == (3, 3, 16, 16, 16)
    assert np.all(np.linalg.norm(modes, axis=1).mean(axis=(1, 2, 3)) > 0.1)
    assert not np.allclose(modes, simba3d.subject_modes(16, 3, seed=1))


def test_effects_change_the_volume(tmp_path):
    flat = dict(SMALL, n_subject_modes=0, disease_scale_mm=0.0, noise_std=0.0)
    path = simba3d.generate(tmp_path / "flat", **flat)
    volumes = [nib.load(p).get_fdata() for p in sorted((path.parent / "images").iterdir())]
    assert all(np.allclose(v, volumes[0], atol=1e-3) for v in volumes)  # no effect -> the template
    path = simba3d.generate(tmp_path / "disease", **dict(flat, disease_scale_mm=20.0))
    volumes = [nib.load(p).get_fdata() for p in sorted((path.parent / "images").iterdir())]
    assert not all(np.allclose(v, volumes[0], atol=1e-3) for v in volumes)


def test_ood_site_adds_a_role_and_leaves_the_training_site_unchanged(volumes, tmp_path):
    site = {"noise_std": 0.0, "intensity_gain": 0.5, "blur_sigma_mm": 10.0}
    path = simba3d.generate(tmp_path, seed=2, ood_size=4, ood_site=site, **SMALL)
    content, before = json.loads(path.read_text()), json.loads(volumes.read_text())
    for role in ("train", "teacher", "validation", "test"):  # same items, same volumes
        assert [i["id"] for i in content[role]] == [i["id"] for i in before[role]]
    first = content["train"][0]["image"]
    assert np.array_equal(nib.load(path.parent / first).get_fdata(), nib.load(volumes.parent / first).get_fdata())
    ood = content["test_ood"]
    assert len(ood) == 4 and sum(i["label"] for i in ood) == 2
    assert content["metadata"]["parameters"]["ood_effects"]["intensity_gain"] == 0.5
    # the other site: half the gain, smoothed, no noise -> darker and smoother than any training volume
    ood_volume = nib.load(path.parent / ood[0]["image"]).get_fdata()
    train_volume = nib.load(path.parent / first).get_fdata()
    assert ood_volume.max() < 0.6 * train_volume.max()
    assert np.abs(np.diff(ood_volume, axis=0)).mean() < 0.5 * np.abs(np.diff(train_volume, axis=0)).mean()


def test_default_ood_site_differs_only_in_site_fields():
    effects = simba3d.Simba3DEffects()
    other = simba3d.ood_site_effects(effects)
    changed = {k for k in simba3d.SITE_FIELDS if getattr(other, k) != getattr(effects, k)}
    assert changed and changed <= set(simba3d.SITE_FIELDS)
    assert dataclasses.replace(other, **{k: getattr(effects, k) for k in simba3d.SITE_FIELDS}) == effects
    with pytest.raises(ValueError, match="disease_mean"):
        simba3d.ood_site_effects(effects, {"disease_mean": 2.0})


@pytest.mark.parametrize("kwargs, match", [
    ({"disease_region": "cerebellum"}, "disease_region"),
    ({"intensity_gain": 0.0}, "intensity_gain"),
    ({"ood_size": -1}, "ood_size"),
    ({"noise_std": -0.1}, "noise_std"),
    ({"warp": 1}, "unknown simba3d parameter"),
    ({"size": 4}, "size must be"),
])
def test_bad_parameters_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simba3d.generate(tmp_path, **{**SMALL, **kwargs})
