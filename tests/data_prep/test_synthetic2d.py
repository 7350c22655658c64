"""The embedded 2D generator: roles, determinism, formats, the finding, OOD, output safety."""

import hashlib
import json

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

from data_prep import synthetic2d
from data_prep.dermoscopy import DermoscopyDomain, draw_dermoscopy
from data_prep.thorax import ThoraxDomain, draw_thorax

SMALL = dict(n=40, size=32, teacher_size=4, progress=False, verbose=False)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


@pytest.fixture(scope="module")
def thorax_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("thorax")
    return synthetic2d.generate(out, ood_size=6, seed=5, **SMALL)


def test_roles_counts_and_items(thorax_set):
    content = json.loads(thorax_set.read_text())
    counts = {role: len(items) for role, items in content.items() if role != "metadata"}
    assert counts == {"train": 24, "teacher": 4, "validation": 4, "test": 8, "test_ood": 6}
    for role in counts:
        labels = [item["label"] for item in content[role]]
        assert labels.count(1) == labels.count(0), role
    ids = [i["id"] for role in ("train", "teacher", "validation", "test") for i in content[role]]
    assert len(set(ids)) == 40
    meta = content["metadata"]
    assert (meta["source"], meta["spatial_dims"], meta["channels"], meta["image_size"]) == ("synthetic2d", 2, 1, [32, 32])
    assert meta["seed"] == 5 and meta["parameters"]["domain"]["opacity_amplitude"] == 0.06


def test_images_load_with_monai(thorax_set):
    items = load_decathlon_datalist(str(thorax_set), is_segmentation=False, data_list_key="test_ood")
    image = LoadImage(image_only=True)(items[0]["image"])
    assert tuple(image.shape) == (32, 32) and float(image.max()) <= 255


def test_same_seed_same_bytes_independent_of_workers(thorax_set, tmp_path):
    again = synthetic2d.generate(tmp_path / "again", ood_size=6, seed=5, workers=2, **SMALL)
    assert _digests(again.parent) == _digests(thorax_set.parent)
    assert again.read_text() == thorax_set.read_text()
    other = synthetic2d.generate(tmp_path / "other", seed=6, **SMALL)
    assert _digests(other.parent)["thorax_000000.png"] != _digests(thorax_set.parent)["thorax_000000.png"]


def test_positive_adds_a_faint_opacity_inside_the_image():
    domain = ThoraxDomain(noise_std=0.0)
    negative = draw_thorax(np.random.default_rng([0, 1]), 64, False, domain)
    positive = draw_thorax(np.random.default_rng([0, 1]), 64, True, domain)
    difference = positive - negative
    assert difference.min() >= -1e-6
    assert 0.02 < difference.max() <= 0.06 + 1e-6
    assert (difference > 0.01).sum() < 0.2 * difference.size  # localized


def test_dermoscopy_is_rgb_and_malignancy_controls_the_difference():
    rng = np.random.default_rng
    image = draw_dermoscopy(rng([0, 2]), 32, True, DermoscopyDomain())
    assert image.shape == (32, 32, 3) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    same = DermoscopyDomain(malignancy=0.0, noise_std=0.0, hair=0.0)
    assert np.array_equal(draw_dermoscopy(rng([0, 2]), 32, True, same), draw_dermoscopy(rng([0, 2]), 32, False, same))


@pytest.mark.parametrize("image_format, flavour, shape, value_check", [
    ("png16", "thorax", (32, 32), lambda a: 255 < a.max() <= 65535),  # 16-bit levels survive
    ("nifti", "dermoscopy", (32, 32, 3), lambda a: a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1),
])
def test_other_formats_round_trip(tmp_path, image_format, flavour, shape, value_check):
    path = synthetic2d.generate(tmp_path, flavour=flavour, image_format=image_format, **SMALL)
    content = json.loads(path.read_text())
    assert content["metadata"]["channels"] == (3 if flavour == "dermoscopy" else 1)
    item = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="train")[0]
    image = LoadImage(image_only=True, dtype=None)(item["image"])
    assert tuple(image.shape) == shape and value_check(image.array)


def test_ood_domain_is_shifted():
    domain = synthetic2d.make_domain("thorax", {"noise_std": 0.1})
    shifted = synthetic2d.default_ood_domain("thorax", domain)
    factors = synthetic2d.OOD_SHIFT["thorax"]
    assert shifted.noise_std == pytest.approx(0.1 * factors["noise_std"]) and shifted.noise_std > 0.1
    assert shifted.contrast < 1 and shifted.pose_jitter > 1 and shifted.opacity_amplitude == 0.06


def test_existing_output_is_not_overwritten(thorax_set):
    before = thorax_set.read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        synthetic2d.generate(thorax_set.parent, **SMALL)
    assert thorax_set.read_text() == before
    assert not [p for p in thorax_set.parent.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_images(tmp_path):
    synthetic2d.generate(tmp_path, **SMALL)
    path = synthetic2d.generate(tmp_path, overwrite=True, **{**SMALL, "n": 20, "teacher_size": 2})
    assert len(list((tmp_path / "images").iterdir())) == 20
    assert json.loads(path.read_text())["metadata"]["parameters"]["n"] == 20


@pytest.mark.parametrize("kwargs, match", [
    ({"flavour": "retina"}, "flavour"),
    ({"image_format": "jpeg"}, "image_format"),
    ({"flavour": "dermoscopy", "image_format": "png16"}, "png16"),
    ({"opacity_amplitude": -1}, "opacity_amplitude"),
    ({"sharpness": 2}, "unknown thorax parameter"),
    ({"n": 1}, "n must be"),
    ({"teacher_size": 100}, "teacher_size"),
])
def test_bad_parameters_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic2d.generate(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / "datalist.json").exists()
