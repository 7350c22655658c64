"""SimBA CSV reader: bias kept as a group attribute, class x bias strata, bias-free teacher."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from data_prep import simba_source
from data_prep.cli import main


def _write(folder, name, count, first=0, relative=True):
    (folder / "vols").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(first, first + count):
        path = folder / "vols" / f"subj_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((3, 3, 3), i, np.float32), np.eye(4)), path)
        rows.append({"filepath": f"vols/{path.name}" if relative else str(path), "filename": path.name,
                     "class_label": i % 2, "bias_label": int(i % 4 < 2)})
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder / name


def _roles(path):
    content = json.loads(path.read_text())
    return {r: v for r, v in content.items() if r != "metadata"}


def test_bias_kept_strata_balanced_and_teacher_bias_free(tmp_path):
    csv = _write(tmp_path / "simba", "train.csv", 80)
    path = simba_source.prepare(csv, tmp_path / "out", teacher_size=8, progress=False, verbose=False)
    roles = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 48, "teacher": 8, "validation": 8, "test": 16}
    assert {i["bias"] for i in roles["teacher"]} == {0}
    assert sorted(i["label"] for i in roles["teacher"]) == [0] * 4 + [1] * 4
    for role in ("validation", "test"):
        groups = pd.Series([(i["label"], i["bias"]) for i in roles[role]]).value_counts()
        assert len(groups) == 4 and groups.max() == groups.min(), role
    assert {i["id"] for r in roles.values() for i in r} == {f"subj_{i:03d}" for i in range(80)}
    assert all((path.parent / i["image"]).is_file() for i in roles["train"])


def test_official_val_and_test_csvs_and_any_bias_teacher(tmp_path):
    folder = tmp_path / "simba"
    train = _write(folder, "train.csv", 40, relative=False)
    val = _write(folder, "val.csv", 8, first=100)
    test = _write(folder, "test.csv", 8, first=200)
    path = simba_source.prepare(train, tmp_path / "out", val_csv=val, test_csv=test, teacher_size=20,
                                teacher_bias_free=False, progress=False, verbose=False)
    roles = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 20, "teacher": 20, "validation": 8, "test": 8}
    assert {i["bias"] for i in roles["teacher"]} == {0, 1}
    assert {i["id"] for i in roles["test"]} == {f"subj_{i:03d}" for i in range(200, 208)}


def test_too_few_bias_free_volumes_for_the_teacher(tmp_path):
    csv = _write(tmp_path / "simba", "train.csv", 40)
    with pytest.raises(ValueError, match="eligible samples"):
        simba_source.prepare(csv, tmp_path / "out", teacher_size=0.5, val_fraction=0.1, test_fraction=0.1,
                             progress=False, verbose=False)


def test_cli_and_bad_csv(tmp_path, capsys):
    csv = _write(tmp_path / "simba", "train.csv", 40)
    assert main(["simba", "--csv", str(csv), "--out", str(tmp_path / "out"), "--teacher-size", "4", "--no-progress"]) == 0
    frame = pd.read_csv(csv)
    frame.loc[3, "bias_label"] = 2
    frame.to_csv(csv, index=False)
    assert main(["simba", "--csv", str(csv), "--out", str(tmp_path / "out2")]) == 2
    assert "'bias_label' must hold 0 or 1" in capsys.readouterr().err
