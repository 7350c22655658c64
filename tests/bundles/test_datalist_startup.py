"""A bundle stops at start-up on a bad datalist, naming the problem, and trains on 1.0 labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundle_helpers import run_workflow, tiny_settings, workflow
from PIL import Image


def _variant(tiny_datalist_2d, tmp_path, change):
    """A copy of the tiny datalist (images referenced where they are) after ``change(content)``."""
    content = json.loads(tiny_datalist_2d.read_text())
    for role, items in content.items():
        if role != "metadata":
            for item in items:
                item["image"] = str(tiny_datalist_2d.parent / item["image"])
    change(content)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def _start_up_error(settings) -> str:
    """The message of the error that stops the baseline's start-up (MONAI wraps it in its own)."""
    with pytest.raises(Exception) as info:
        workflow("baseline", "train", settings)
    return str(info.value.__cause__ or info.value)


def test_train_and_test_sharing_an_item_stops_training(tiny_datalist_2d, tmp_path):
    path = _variant(tiny_datalist_2d, tmp_path, lambda c: c["test"].append(dict(c["train"][0])))
    message = _start_up_error(tiny_settings(path, tmp_path / "runs"))
    assert "in both 'train' and 'test'" in message and "allow_role_overlap" in message
    workflow("baseline", "train", tiny_settings(path, tmp_path / "runs", allow_role_overlap=True))


def test_whole_float_labels_train(tiny_datalist_2d, tmp_path):
    def as_floats(content):
        for role in ("train", "validation"):
            for item in content[role]:
                item["label"] = float(item["label"])

    path = _variant(tiny_datalist_2d, tmp_path, as_floats)
    wf = run_workflow("baseline", "train", tiny_settings(path, tmp_path / "runs"))
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1


def test_rgb_image_in_a_one_channel_bundle_stops_at_start_up(tiny_datalist_2d, tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    path = _variant(tiny_datalist_2d, tmp_path, lambda c: c["train"][0].update(image=str(rgb)))
    message = _start_up_error(tiny_settings(path, tmp_path / "runs"))
    assert f"'{rgb}' has 3 channel(s)" in message and "in_channels=1" in message


def test_volumes_in_a_2d_bundle_stop_at_start_up(tiny_datalist_3d, tmp_path):
    message = _start_up_error(tiny_settings(tiny_datalist_3d, tmp_path / "runs", spatial_dims=2))
    assert ".nii.gz' has 3 spatial dimension(s)" in message and "--spatial_dims 3" in message
