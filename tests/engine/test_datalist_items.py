"""Every datalist item is checked at start-up (size, channels, dimensions; header reads, cached),
and 3D volumes are brought to one orientation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd
from PIL import Image

from pipeline.engine import datalist as datalist_module
from pipeline.engine.datalist import check_datalist, check_image_size_setting, image_shape, load_role
from pipeline.engine.image_io import load_image, orient


def _datalist(tmp_path, images, metadata=None, role="train"):
    items = [{"image": str(p), "label": i % 2, "id": f"s{i}"} for i, p in enumerate(images)]
    content = {role: items, **({"metadata": metadata} if metadata is not None else {})}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def _pngs(tmp_path, count=5, size=(8, 8), mode="L"):
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}_{mode}_{size[0]}x{size[1]}.png"
        shape = size if mode == "L" else (*size, 3)
        Image.fromarray(np.full(shape, 40 * i, np.uint8), mode).save(path)
        paths.append(path)
    return paths


def _volume(path, shape=(16, 16, 16), affine=None):
    nib.save(
        nib.Nifti1Image(
            np.random.default_rng(0).random(shape, dtype=np.float32), np.eye(4) if affine is None else affine
        ),
        path,
    )
    return path


def test_an_image_of_another_size_deep_in_a_role_is_named(tmp_path):
    """Issue 27, row 9: a 1x1 PNG among 8x8 ones was resized silently."""
    images = _pngs(tmp_path)
    odd = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(odd)
    path = _datalist(tmp_path, [*images[:3], odd, *images[3:]])
    with pytest.raises(
        ValueError, match=rf"'{odd}' has size \[1, 1\] .* but \[8, 8\] is the size of 5 of its 6 images"
    ):
        check_datalist(path, ["train"], 2, 1)
    declared = _datalist(tmp_path, [*images, odd], metadata={"image_size": None})  # sizes vary on purpose
    check_datalist(declared, ["train"], 2, 1)
    wrong = _datalist(tmp_path, images, metadata={"image_size": [16, 16]})
    with pytest.raises(
        ValueError, match=r"has size \[8, 8\] .* \[16, 16\] is the datalist's metadata.image_size"
    ):
        check_datalist(wrong, ["train"], 2, 1)


def test_a_smaller_volume_among_16_cubed_is_named(tmp_path):
    volumes = [_volume(tmp_path / f"v{i}.nii.gz") for i in range(4)]
    odd = _volume(tmp_path / "short.nii.gz", (8, 16, 16))
    path = _datalist(tmp_path, [*volumes[:2], odd, *volumes[2:]])
    with pytest.raises(ValueError, match=rf"'{odd}' has size \[8, 16, 16\]"):
        check_datalist(path, ["train"], 3, 1)


def test_an_rgb_image_in_a_grey_role_or_a_4d_volume_names_the_file(tmp_path):
    """Issue 27: both gave a collate error that named no file."""
    grey = _pngs(tmp_path)
    rgb = _pngs(tmp_path, 1, mode="RGB")[0]
    path = _datalist(tmp_path, [*grey, rgb])
    with pytest.raises(ValueError, match=rf"'{rgb}' has 3 channel\(s\) .* in_channels=1"):
        check_datalist(path, ["train"], 2, 1)
    volumes = [_volume(tmp_path / f"v{i}.nii.gz") for i in range(3)]
    four = _volume(tmp_path / "four.nii.gz", (16, 16, 16, 2))
    path = _datalist(tmp_path, [*volumes, four])
    with pytest.raises(ValueError, match=rf"'{four}' has 2 channel\(s\)"):
        check_datalist(path, ["train"], 3, 1)


def test_header_shapes_match_what_the_bundles_load(tmp_path):
    """The header read gives the shape LoadImage + EnsureChannelFirst + orientation give."""
    permuted = np.array([[0, 0, 2, 0], [-1, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 1.0]])
    cases = [(_volume(tmp_path / "p.nii.gz", (6, 8, 10), permuted), 3),
             (_pngs(tmp_path, 1, (6, 9), "RGB")[0], 2), (_pngs(tmp_path, 1, (5, 7))[0], 2)]  # fmt: skip
    for path, dims in cases:
        loaded = Compose([load_image("image"), EnsureChannelFirstd("image"), orient("image", dims)])(
            {"image": str(path)}
        )
        shape = tuple(loaded["image"].shape)
        assert image_shape(path) == (shape[0], shape[1:]), path


def test_headers_are_read_once_per_file_version(tmp_path, monkeypatch):
    """The check is cheap: a second check of the same datalist reads no image header again."""
    path = _datalist(tmp_path, _pngs(tmp_path))
    check_datalist(path, ["train"], 2, 1)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    check_datalist(path, ["train"], 2, 1)
    assert opened == []
    assert len(datalist_module._SHAPES) >= 5


def test_a_volume_saved_with_a_flipped_affine_is_not_loaded_mirrored(tmp_path):
    """Issue 27, row 10: no orientation handling. The same anatomy stored left-right flipped,
    with the affine that says so, loads identically (RAS)."""
    array = np.random.default_rng(1).random((8, 10, 12), dtype=np.float32)
    _volume_with(tmp_path / "ras.nii.gz", array, np.diag([2.0, 2.0, 2.0, 1.0]))
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (array.shape[0] - 1)
    _volume_with(tmp_path / "las.nii.gz", array[::-1].copy(), flipped)
    load = Compose([load_image("image"), EnsureChannelFirstd("image"), orient("image", 3)])
    ras = np.asarray(load({"image": str(tmp_path / "ras.nii.gz")})["image"])
    las = np.asarray(load({"image": str(tmp_path / "las.nii.gz")})["image"])
    np.testing.assert_array_equal(ras, las)
    unoriented = Compose([load_image("image"), EnsureChannelFirstd("image")])
    assert not np.array_equal(np.asarray(unoriented({"image": str(tmp_path / "las.nii.gz")})["image"]), ras)


def test_the_3d_scenarios_preprocessing_loads_a_flipped_volume_as_the_ras_one(tmp_path):
    """Row 10 through the bundles' own preprocessing (base.yaml and a 3D scenario file), not
    just the transform: a left-right flipped copy with its affine gives the same tensor."""
    from monai.bundle import ConfigParser

    from pipeline.bundles import BUNDLES_ROOT

    array = np.random.default_rng(2).random((8, 8, 8), dtype=np.float32)
    _volume_with(tmp_path / "ras.nii.gz", array, np.diag([2.0, 2.0, 2.0, 1.0]))
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (array.shape[0] - 1)
    _volume_with(tmp_path / "las.nii.gz", array[::-1].copy(), flipped)
    configs = BUNDLES_ROOT / "common" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "base.yaml"), str(configs / "scenarios" / "localized3d.yaml")])
    parser["intensity_range"] = parser["scaling_range"] = [0.0, 1.0]
    parser["image_size"] = [8, 8, 8]
    loaded = []
    for name in ("ras.nii.gz", "las.nii.gz"):
        item = {"image": str(tmp_path / name)}
        for transform in parser.get_parsed_content("preprocessing"):
            item = transform(item)
        loaded.append(np.asarray(item["image"]))
    assert loaded[0].shape == (1, 8, 8, 8)
    np.testing.assert_allclose(loaded[1], loaded[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded[0][0], array, rtol=1e-6, atol=1e-6)


def _volume_with(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), path)


@pytest.mark.parametrize(
    "role_value, message",
    [([], "role 'test' is empty"),
     ({"a.png": 1}, "role 'test' must be a list of items .* got a dict"),
     (["a.png"], "role 'test' item 0 is 'a.png' \\(a str\\); expected a mapping")],
)  # fmt: skip
def test_a_malformed_role_is_named(tmp_path, role_value, message):
    """Issue 27: an empty test role gave IndexError; a dict role or a string item a traceback."""
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"train": [], "test": role_value}))
    with pytest.raises(ValueError, match=message):
        load_role(path, "test")


@pytest.mark.parametrize("image_size, dims", [([32], 2), ([32, 32], 3), ([32, 0], 2), (32.5, 2)])
def test_an_image_size_that_does_not_fit_spatial_dims_names_image_size(image_size, dims):
    """Issue 27: ``--image_size "[32]"`` on 2D gave MONAI's spatial_size message."""
    with pytest.raises(ValueError, match=rf"image_size .* must give {dims} positive whole sizes"):
        check_image_size_setting(image_size, dims)
    check_image_size_setting([32] * dims, dims)
