"""Shared checking path: missing/unreadable images, --drop-missing, ids, labels, attributes."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.datalist_build import build_datalist
from data_prep.image_check import image_problem
from data_prep.splits import SplitSpec


def _table(folder, n=20, broken=(), missing=()):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        if i in broken:
            path.write_bytes(b"not a png")
        elif i not in missing:
            Image.fromarray(np.full((4, 4), i, np.uint8)).save(path)
        rows.append({"image": path, "label": i % 2, "id": f"img{i:02d}", "sex": "F" if i % 3 else None,
                     "age": float(i) if i % 4 else np.nan})
    return pd.DataFrame(rows)


SPEC = SplitSpec(val_fraction=0.2, test_fraction=0.2, teacher_size=2, seed=0)


def test_missing_and_unreadable_images_are_listed_in_one_error(tmp_path):
    table = _table(tmp_path / "src", broken=(3,), missing=(5, 7))
    with pytest.raises(ValueError) as error:
        build_datalist(table, tmp_path / "out", SPEC, {}, progress=False, verbose=False)
    message = str(error.value)
    assert message.startswith("3 of 20 referenced image file(s)")
    assert "img03.png (unreadable" in message and "img05.png (missing)" in message and "--drop-missing" in message
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_drop_missing_drops_and_reports(tmp_path, capsys):
    table = _table(tmp_path / "src", broken=(3,), missing=(5, 7))
    path = build_datalist(table, tmp_path / "out", SPEC, {}, drop_missing=True, progress=False, verbose=False)
    assert "dropped 3 sample(s)" in capsys.readouterr().out
    content = json.loads(path.read_text())
    ids = {item["id"] for role in ("train", "teacher", "validation", "test") for item in content[role]}
    assert len(ids) == 17 and not ids & {"img03", "img05", "img07"}


def test_attributes_are_copied_and_missing_values_filled(tmp_path):
    table = _table(tmp_path / "src")
    path = build_datalist(table, tmp_path / "out", SPEC, {"source": "unit"}, attributes=("sex", "age"),
                          progress=False, verbose=False)
    items = {i["id"]: i for role, v in json.loads(path.read_text()).items() if role != "metadata" for i in v}
    assert items["img00"]["sex"] == "unknown" and items["img01"]["sex"] == "F"
    assert items["img00"]["age"] == -1 and items["img05"]["age"] == 5
    assert items["img05"]["image"] == "../src/img05.png"


def test_source_defined_roles_are_kept(tmp_path):
    table = _table(tmp_path / "src")
    table["role"] = [None] * 16 + ["test"] * 4
    spec = SplitSpec(val_fraction=0.25, test_fraction=0.0, teacher_size=2, seed=0)
    content = json.loads(build_datalist(table, tmp_path / "out", spec, {}, progress=False, verbose=False).read_text())
    assert [i["id"] for i in content["test"]] == ["img16", "img17", "img18", "img19"]
    assert len(content["validation"]) == 4 and len(content["train"]) == 10


@pytest.mark.parametrize("column, value, match", [
    ("label", 2, "labels must be 0 or 1"),
    ("id", "img00", "duplicate id"),
    ("role", "holdout", "unknown role"),
])
def test_bad_tables_raise(tmp_path, column, value, match):
    table = _table(tmp_path / "src")
    table[column] = table[column].astype(object) if column in table else None
    table.loc[1, column] = value
    with pytest.raises(ValueError, match=match):
        build_datalist(table, tmp_path / "out", SPEC, {}, progress=False, verbose=False)


def test_patient_in_two_source_roles_is_an_error(tmp_path):
    table = _table(tmp_path / "src")
    table["patient"] = [f"p{i // 2}" for i in range(20)]
    table["role"] = [None] * 19 + ["test"]
    with pytest.raises(ValueError, match="p9"):
        build_datalist(table, tmp_path / "out", SPEC, {}, group="patient", progress=False, verbose=False)


def test_image_problem_knows_nifti_and_suffixes(tmp_path):
    import nibabel as nib

    good = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), good)
    bad = tmp_path / "w.nii.gz"
    bad.write_bytes(b"garbage")
    other = tmp_path / "x.txt"
    other.write_text("x")
    assert image_problem(good) is None
    assert image_problem(bad).startswith("unreadable")
    assert image_problem(other).startswith("unsupported suffix")


def test_one_image_file_for_two_samples_is_an_error(tmp_path):
    table = _table(tmp_path / "src")
    table.loc[7, "image"] = tmp_path / "src" / ".." / "src" / "img02.png"  # the same file, written differently
    with pytest.raises(ValueError) as error:
        build_datalist(table, tmp_path / "out", SPEC, {}, progress=False, verbose=False)
    message = str(error.value)
    assert message.startswith("1 image file(s) belong to more than one sample")
    assert f"{tmp_path / 'src' / 'img02.png'} (ids ['img02', 'img07'])" in message
