"""2D images keep their stored orientation from file to tensor, through the bundles' preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from pipeline.bundles import BUNDLES_ROOT
from pipeline.engine.image_io import load_image


def _asymmetric(height=12, width=20):
    """A (rows, columns) ramp with a bright pixel off the diagonal: any transpose or flip changes it."""
    array = np.tile(np.arange(width, dtype=np.uint8) * 5, (height, 1))
    array[2, 15] = 255
    return array


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
def test_raster_image_loads_as_stored(tmp_path, mode):
    array = _asymmetric()
    path = tmp_path / "image.png"
    if mode == "RGB":
        Image.fromarray(np.stack([array] * 3, axis=-1)).save(path)
    elif mode == "I;16":
        Image.fromarray(array.astype(np.uint16) * 200).save(path)
    else:
        Image.fromarray(array).save(path)
    loaded = np.asarray(load_image("image")({"image": str(path)})["image"])
    assert loaded.shape[:2] == array.shape
    plane = loaded[..., 0] if loaded.ndim == 3 else loaded
    expected = array.astype(np.float64) * (200 if mode == "I;16" else 1)
    np.testing.assert_array_equal(plane, expected)


def test_bundle_preprocessing_keeps_rows_and_columns(tmp_path):
    """The shared base.yaml preprocessing (load, channel, scaling, resize) yields (1, H, W) as stored."""
    array = _asymmetric(16, 16)
    Image.fromarray(array).save(tmp_path / "a.png")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"metadata": {"stored_intensity_range": [0, 255]}, "train": []}))
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_ROOT / "common" / "configs" / "base.yaml"))
    parser["datalist"] = str(datalist)
    parser["image_size"] = [16, 16]
    parser["spatial_dims"] = 2  # set by the scenario files (2D: the orientation step is the identity)
    item = {"image": str(tmp_path / "a.png")}
    for transform in parser.get_parsed_content("preprocessing"):
        item = transform(item)
    image = np.asarray(item["image"])
    assert image.shape == (1, 16, 16)
    np.testing.assert_allclose(image[0], array / 255.0, rtol=1e-6, atol=1e-6)
    assert np.unravel_index(np.argmax(image[0]), (16, 16)) == (2, 15)
