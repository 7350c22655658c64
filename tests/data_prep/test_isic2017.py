"""ISIC 2017 reader on a tiny fixture tree with the challenge's layout."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep import isic2017
from data_prep.cli import main


def _part(root, name, count, first, rng, metadata=True, nested=False):
    folder = root / f"ISIC-2017_{name}_Data"
    if nested:  # the archive unzipped into a folder of its own name
        folder = folder / folder.name
    folder.mkdir(parents=True)
    rows = []
    for i in range(first, first + count):
        image_id = f"ISIC_{i:07d}"
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(folder / f"{image_id}.jpg")
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(folder / f"{image_id}_superpixels.png")
        rows.append({"image_id": image_id, "melanoma": float(i % 4 == 0), "seborrheic_keratosis": float(i % 4 == 1)})
    pd.DataFrame(rows).to_csv(root / f"ISIC-2017_{name}_Part3_GroundTruth.csv", index=False)
    if metadata:
        pd.DataFrame({"image_id": [r["image_id"] for r in rows],
                      "age_approximate": ["unknown" if i % 5 == 0 else 55 for i in range(count)],
                      "sex": ["female", "male", "unknown"] * (count // 3) + ["male"] * (count % 3)}
                     ).to_csv(folder / f"ISIC-2017_{name}_Data_metadata.csv", index=False)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "isic"
    rng = np.random.default_rng(1)
    _part(root, "Training", 40, 0, rng)
    _part(root, "Validation", 8, 100, rng)
    _part(root, "Test_v2", 12, 200, rng, metadata=False)
    return root


def _roles(path):
    content = json.loads(path.read_text())
    return {r: v for r, v in content.items() if r != "metadata"}, content["metadata"]


def test_official_parts_become_roles_and_source_unchanged(root, tmp_path):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    path = isic2017.prepare(root, tmp_path / "out", teacher_size=4, progress=False, verbose=False)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()} == before
    roles, meta = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 36, "teacher": 4, "validation": 8, "test": 12}
    assert {i["id"] for i in roles["validation"]} == {f"ISIC_{i:07d}" for i in range(100, 108)}
    assert meta["parameters"]["official_parts"] == ["Training", "Validation", "Test"]
    assert sum(i["label"] for i in roles["train"] + roles["teacher"]) == 10  # melanoma: every 4th
    item = next(i for i in roles["train"] if i["id"] == "ISIC_0000001")
    assert (item["sex"], item["age"]) == ("male", 55) and type(item["age"]) is int
    assert {i["sex"] for i in roles["test"]} == {"unknown"} and {i["age"] for i in roles["test"]} == {-1}


def test_training_only_is_split_by_fractions_and_task_switch(tmp_path):
    root = tmp_path / "isic"
    _part(root, "Training", 40, 0, np.random.default_rng(2), metadata=False)
    path = isic2017.prepare(root, tmp_path / "out", task="seborrheic_keratosis", teacher_size=4,
                            progress=False, verbose=False)
    roles, meta = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 24, "teacher": 4, "validation": 4, "test": 8}
    positives = {i["id"] for r in roles.values() for i in r if i["label"] == 1}
    assert positives == {f"ISIC_{i:07d}" for i in range(1, 40, 4)}


def test_image_folders_unzipped_twice_are_found(tmp_path):
    root = tmp_path / "isic"
    rng = np.random.default_rng(1)
    _part(root, "Training", 40, 0, rng, nested=True)
    _part(root, "Test_v2", 12, 200, rng, nested=True)
    path = isic2017.prepare(root, tmp_path / "out", teacher_size=4, progress=False, verbose=False)
    roles, meta = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 32, "teacher": 4, "validation": 4, "test": 12}
    assert meta["parameters"]["official_parts"] == ["Training", "Test"]
    item = next(i for r in roles.values() for i in r if i["id"] == "ISIC_0000001")
    assert (item["sex"], item["age"]) == ("male", 55)  # the metadata CSV inside the inner folder is read
    assert (path.parent / item["image"]).resolve() == (
        root / "ISIC-2017_Training_Data" / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg"
    ).resolve()


def test_corrupt_image_is_reported_then_dropped(root, tmp_path, capsys):
    (root / "ISIC-2017_Training_Data" / "ISIC_0000003.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ValueError, match=r"ISIC_0000003.jpg \(unreadable"):
        isic2017.prepare(root, tmp_path / "out", teacher_size=4, progress=False, verbose=False)
    assert main(["isic2017", "--root", str(root), "--out", str(tmp_path / "out"), "--teacher-size", "4",
                 "--drop-missing", "--no-progress"]) == 0
    assert "dropped 1 sample" in capsys.readouterr().out


def test_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="no ISIC 2017 training part"):
        isic2017.prepare(tmp_path, tmp_path / "out")
    _part(tmp_path, "Training", 8, 0, np.random.default_rng(3))
    (tmp_path / "ISIC-2017_Validation_Data").mkdir()
    with pytest.raises(ValueError, match="Validation part is incomplete"):
        isic2017.prepare(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="task must be one of"):
        isic2017.prepare(tmp_path, tmp_path / "out", task="nevus")


def test_png_images_are_read_and_missing_ones_are_counted(root, tmp_path):
    folder = root / "ISIC-2017_Training_Data"
    for path in sorted(folder.glob("ISIC_???????.jpg"))[:10]:  # ten converted to PNG, one removed
        Image.open(path).save(path.with_suffix(".png"))
        path.unlink()
    datalist = isic2017.prepare(root, tmp_path / "out", progress=False, verbose=False)
    images = [item["image"] for role in ("train", "teacher", "validation", "test")
              for item in json.loads(datalist.read_text()).get(role, [])]
    assert sum(image.endswith(".png") for image in images) == 10
    for path in sorted(folder.glob("ISIC_???????.png"))[:7]:
        path.unlink()
    with pytest.raises(ValueError, match=r"^7 of 60 referenced image file\(s\) .*e\.g\. .*ISIC_0000000\.jpg \(missing.*and 2 more"):
        isic2017.prepare(root, tmp_path / "again", progress=False, verbose=False)
