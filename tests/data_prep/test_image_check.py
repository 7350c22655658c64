"""The image check decodes every file: truncated, empty and non-finite images are named, all of them."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.datalist_build import build_datalist
from data_prep.image_check import find_bad_images, image_problem
from data_prep.splits import SplitSpec


def _jpeg(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        path, quality=90
    )
    return path


def _nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_jpeg_missing_its_last_bytes_is_unreadable(tmp_path):
    path = _jpeg(tmp_path / "a.jpg")
    assert image_problem(path) is None
    path.write_bytes(path.read_bytes()[:-200])
    assert "truncated" in image_problem(path)


def test_nifti_cut_in_half_is_unreadable(tmp_path):
    path = _nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((16, 16, 16), dtype=np.float32))
    assert image_problem(path) is None
    assert image_problem(_truncate(path, 0.5)).startswith("unreadable")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_nifti_is_rejected_with_the_count(tmp_path, bad_value):
    array = np.zeros((4, 4, 4), np.float32)
    array[0, 0, :3] = bad_value
    assert image_problem(_nifti(tmp_path / "some.nii", array)) == "3 of 64 values are NaN or infinite"
    all_nan = _nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    assert image_problem(all_nan) == "64 of 64 values are NaN or infinite"


def test_zero_byte_files_are_rejected(tmp_path):
    for name in ("a.png", "b.jpg", "c.nii.gz"):
        (tmp_path / name).write_bytes(b"")
        assert image_problem(tmp_path / name) == "empty file (0 bytes)"


def test_every_bad_file_is_named_in_one_error(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    paths = [_jpeg(source / f"img{i:02d}.jpg", seed=i) for i in range(30)]
    broken = list(range(0, 30, 2))  # 15 bad files: more than a "first few" listing would show
    for i in broken:
        _truncate(paths[i], 0.6)
    assert sorted(find_bad_images(paths, progress=False)) == broken
    table = {"image": paths, "label": [i % 2 for i in range(30)], "id": [p.stem for p in paths]}

    with pytest.raises(ValueError) as error:
        build_datalist(
            pd.DataFrame(table),
            tmp_path / "out",
            SplitSpec(0.2, 0.2, 2, seed=0),
            {},
            progress=False,
            verbose=False,
        )
    message = str(error.value)
    assert message.startswith("15 of 30 referenced image file(s)")
    shown = [i for i in broken if f"{paths[i]} (unreadable" in message]
    assert len(shown) == 5 and "; and 10 more" in message  # a few named, the rest counted
    assert not any(str(paths[i]) in message for i in range(1, 30, 2))
    assert not (tmp_path / "out" / "datalist.json").exists()
