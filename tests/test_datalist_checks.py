"""Start-up datalist checks: role overlap (leakage), labels, and images that do not fit the config."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.synthetic2d import generate
from pipeline.engine.datalist import check_datalist, load_role, role_overlaps


def _png(path, channels=1):
    shape = (8, 8) if channels == 1 else (8, 8, channels)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return path.name


def _datalist(tmp_path, roles, metadata=None):
    """A datalist of PNGs: ``roles`` maps role -> list of (id, label) pairs; images named by id."""
    content = {}
    for role, entries in roles.items():
        content[role] = []
        for sample_id, label in entries:
            if not (tmp_path / f"{sample_id}.png").exists():
                _png(tmp_path / f"{sample_id}.png")
            content[role].append({"image": f"{sample_id}.png", "label": label, "id": sample_id})
    content["metadata"] = metadata or {}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


DISJOINT = {"train": [("a", 0), ("b", 1)], "validation": [("c", 0), ("d", 1)], "test": [("e", 0), ("f", 1)]}


def test_the_same_item_in_train_and_test_is_an_error_naming_roles_and_setting(tmp_path):
    path = _datalist(tmp_path, {**DISJOINT, "test": [("e", 0), ("b", 1)]})
    with pytest.raises(ValueError) as error:
        check_datalist(path, ["train", "validation"])
    message = str(error.value)
    assert "1 id(s) in both 'train' and 'test'" in message and "'b'" in message
    assert "1 image(s) in both 'train' and 'test'" in message and "allow_role_overlap" in message


def test_the_same_image_under_another_id_is_caught(tmp_path):
    path = _datalist(tmp_path, DISJOINT)
    content = json.loads(path.read_text())
    content["test"][0]["image"] = "./a.png"  # the training image a.png, written differently
    path.write_text(json.dumps(content))
    assert role_overlaps(path) == [
        "1 image(s) in both 'train' and 'test' (e.g. '" + str(tmp_path / "a.png") + "')"
    ]


def test_allowed_overlap_is_a_warning(tmp_path, caplog):
    path = _datalist(tmp_path, {**DISJOINT, "validation": [("c", 0), ("a", 0)]})
    with caplog.at_level(logging.WARNING, logger="pipeline.engine.datalist"):
        check_datalist(path, ["train", "validation"], allow_role_overlap=True)
    assert (
        "in both 'train' and 'validation'" in caplog.text and "allowed by allow_role_overlap" in caplog.text
    )


def test_embedded_datalists_have_disjoint_roles(tiny_datalist_2d, tiny_datalist_3d, tmp_path):
    assert role_overlaps(tiny_datalist_2d) == [] and role_overlaps(tiny_datalist_3d) == []
    check_datalist(tiny_datalist_2d, ["train", "validation"], spatial_dims=2, in_channels=1)
    check_datalist(tiny_datalist_3d, ["teacher", "validation"], spatial_dims=3, in_channels=1)
    # data_prep's --teacher-from-train: the teacher inside train is the recorded design, not leakage
    inside = generate(
        tmp_path / "inside",
        n=40,
        size=16,
        teacher_size=6,
        teacher_disjoint=False,
        progress=False,
        verbose=False,
    )
    content = json.loads(inside.read_text())
    assert {i["id"] for i in content["teacher"]} <= {i["id"] for i in content["train"]}
    assert role_overlaps(inside) == []
    check_datalist(inside, ["train", "teacher"])


def test_whole_float_labels_become_class_indices(tmp_path):
    path = _datalist(tmp_path, {**DISJOINT, "train": [("a", 0.0), ("b", 1.0)]})
    items = load_role(path, "train")
    assert [item["label"] for item in items] == [0, 1]
    assert all(type(item["label"]) is int for item in items)
    # what CrossEntropyLoss receives after collation: a Long target
    assert torch.utils.data.default_collate(items)["label"].dtype == torch.int64


@pytest.mark.parametrize("label", [0.5, "1", "yes", True, 2, None])
def test_other_labels_are_rejected_with_file_role_item_and_value(tmp_path, label):
    path = _datalist(tmp_path, {**DISJOINT, "train": [("a", 0), ("b", label)]})
    with pytest.raises(ValueError) as error:
        check_datalist(path, ["train"])
    message = str(error.value)
    assert (
        str(path) in message and "role 'train' item 1 (id 'b')" in message and f"label {label!r}" in message
    )


def test_rgb_image_in_a_one_channel_config_names_file_and_setting(tmp_path):
    path = _datalist(tmp_path, DISJOINT)
    _png(tmp_path / "c.png", channels=3)  # the first validation image
    check_datalist(path, ["train"], spatial_dims=2, in_channels=1)
    with pytest.raises(ValueError) as error:
        check_datalist(path, ["train", "validation"], spatial_dims=2, in_channels=1)
    message = str(error.value)
    assert "role 'validation'" in message and str(tmp_path / "c.png") in message
    assert "3 channel(s)" in message and "in_channels=1" in message and "--in_channels 3" in message


def test_volume_in_a_2d_config_names_file_and_setting(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    content = {
        "train": [{"image": "v.nii.gz", "label": 1, "id": "v"}],
        "test": [{"image": "v2.nii.gz", "label": 0, "id": "v2"}],
    }
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.float32), np.eye(4)), tmp_path / "v2.nii.gz")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    check_datalist(path, ["train"], spatial_dims=3, in_channels=1)
    with pytest.raises(ValueError) as error:
        check_datalist(path, ["train"], spatial_dims=2, in_channels=1)
    message = str(error.value)
    assert str(tmp_path / "v.nii.gz") in message and "3 spatial dimension(s)" in message
    assert "spatial_dims=2" in message and "--spatial_dims 3" in message


def test_unloadable_first_image_is_named(tmp_path):
    path = _datalist(tmp_path, DISJOINT)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot load '.*a\.png'"):
        check_datalist(path, ["train"], spatial_dims=2, in_channels=1)
