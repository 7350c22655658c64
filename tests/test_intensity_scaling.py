"""Intensity scaling from the datalist's stored range keeps differences between images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.engine.datalist import intensity_scaling, resolve_intensity_range


def _datalist(tmp_path, metadata):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"metadata": metadata, "train": []}))
    return path


def test_stored_range_from_metadata_is_a_fixed_mapping(tmp_path):
    scale = intensity_scaling(_datalist(tmp_path, {"stored_intensity_range": [0, 255]}))
    dim, bright = np.full((1, 4, 4), 50.0), np.full((1, 4, 4), 200.0)
    dim[0, 0, 0], bright[0, 0, 0] = 0.0, 255.0
    assert np.allclose(scale({"image": dim})["image"][0, 1, 1], 50 / 255)
    assert np.allclose(scale({"image": bright})["image"][0, 1, 1], 200 / 255)


def test_explicit_range_clips_and_per_image_is_a_choice(tmp_path):
    datalist = _datalist(tmp_path, {})
    clipped = intensity_scaling(datalist, [0, 100])({"image": np.array([[[-5.0, 50.0, 150.0]]])})["image"]
    assert np.allclose(clipped, [[[0.0, 0.5, 1.0]]])
    per_image = intensity_scaling(None, "per_image")({"image": np.array([[[10.0, 20.0, 30.0]]])})["image"]
    assert np.allclose(per_image, [[[0.0, 0.5, 1.0]]])
    with pytest.raises(ValueError, match="increasing"):
        intensity_scaling(datalist, [5, 5])
    with pytest.raises(ValueError, match="no datalist to read it from"):
        intensity_scaling(None)


def test_without_a_stored_range_the_training_role_gives_it(tmp_path):
    from PIL import Image

    items = []
    for i, (low, high) in enumerate([(10, 60), (30, 200), (5, 90)]):
        pixels = np.full((4, 4), low, np.uint8)
        pixels[0, 0] = high
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        items.append({"image": f"{i}.png", "label": i % 2, "id": str(i)})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"train": items, "test": items[:1]}))
    assert resolve_intensity_range(path) == [5.0, 200.0]  # over every training image, not per image
    scale = intensity_scaling(path)
    assert np.allclose(scale({"image": np.array([[[5.0, 102.5, 200.0]]])})["image"], [[[0.0, 0.5, 1.0]]])
