"""CheXpert reader on a tiny fixture tree with the real layout."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep import chexpert
from data_prep.cli import main

COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *chexpert.FINDINGS]


def _write_csv(root, name, split, patients, first_patient, rng):
    rows = []
    for p in range(first_patient, first_patient + patients):
        for study in (1, 2):
            for view, kind in (("view1_frontal", "Frontal"), ("view2_lateral", "Lateral")):
                rel = f"{split}/patient{p:05d}/study{study}/{view}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / rel)
                findings = {f: "" for f in chexpert.FINDINGS}
                findings["Pleural Effusion"] = [1.0, 0.0, -1.0, ""][(p + study) % 4]
                rows.append({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": ["Male", "Female", ""][p % 3],
                             "Age": 40 + p, "Frontal/Lateral": kind, "AP/PA": "AP" if kind == "Frontal" else "",
                             **findings})
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / name, index=False)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data" / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    _write_csv(root, "train.csv", "train", patients=24, first_patient=1, rng=rng)
    _write_csv(root, "valid.csv", "valid", patients=3, first_patient=90, rng=rng)
    return root


def _items(path):
    content = json.loads(path.read_text())
    return {role: items for role, items in content.items() if role != "metadata"}, content["metadata"]


def _snapshot(folder):
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_patient_level_split_valid_as_test_and_source_unchanged(root, tmp_path):
    before = _snapshot(root)
    path = chexpert.prepare(root, tmp_path / "out", teacher_size=8, val_fraction=0.2, progress=False, verbose=False)
    assert _snapshot(root) == before
    roles, meta = _items(path)
    assert {i["patient"] for i in roles["test"]} == {"patient00090", "patient00091", "patient00092"}
    owner = {}
    for role, items in roles.items():
        for item in items:
            assert owner.setdefault(item["patient"], role) == role
            assert (path.parent / item["image"]).resolve().is_file()
    assert len(roles["teacher"]) == 8 and meta["source"] == "chexpert"
    first = roles["train"][0]
    assert set(first) == {"image", "label", "id", "patient", "sex", "age", "view", "projection"}
    assert first["id"].startswith(first["patient"] + "/study")
    assert {i["sex"] for r in roles.values() for i in r} == {"Male", "Female", "Unknown"}


@pytest.mark.parametrize("uncertain, expected_rows, positives", [("zeros", 96, 24), ("ones", 96, 48), ("ignore", 72, 24)])
def test_uncertain_policies(root, tmp_path, uncertain, expected_rows, positives):
    table = chexpert.read_table(root, "train.csv", "Pleural Effusion", uncertain, frontal_only=False)
    assert len(table) == expected_rows and table["label"].sum() == positives


def test_frontal_only_and_other_finding(root):
    table = chexpert.read_table(root, "train.csv", "Edema", "zeros", frontal_only=True)
    assert set(table["view"]) == {"Frontal"} and len(table) == 48 and table["label"].sum() == 0


def test_same_seed_same_datalist_other_seed_differs(root, tmp_path):
    kwargs = dict(teacher_size=0.1, seed=4, progress=False, verbose=False)
    first = chexpert.prepare(root, tmp_path / "a", **kwargs).read_text()
    assert chexpert.prepare(root, tmp_path / "b", **kwargs).read_text() == first
    assert chexpert.prepare(root, tmp_path / "c", **{**kwargs, "seed": 5}).read_text() != first


def test_missing_images_error_and_drop(root, tmp_path, capsys):
    (root / "train/patient00001/study1/view1_frontal.jpg").unlink()
    with pytest.raises(ValueError, match=r"1 of 108 .*patient00001/study1/view1_frontal.jpg \(missing\)"):
        chexpert.prepare(root, tmp_path / "out", teacher_size=4, progress=False, verbose=False)
    path = chexpert.prepare(root, tmp_path / "out", teacher_size=4, drop_missing=True, progress=False, verbose=False)
    assert "dropped 1 sample" in capsys.readouterr().out
    assert sum(len(v) for v in _items(path)[0].values()) == 107


def test_cli_runs_and_reports_bad_input(root, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["chexpert", "--root", str(root), "--out", str(out), "--teacher-size", "6", "--frontal-only", "--no-progress"]
    assert main(args) == 0
    assert (out / "datalist.json").is_file() and (out / "datalist_summary.csv").is_file()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--valid-role", "validation"]) == 0
    roles, meta = _items(out / "datalist.json")
    assert "test" not in roles and meta["parameters"]["valid_role"] == "validation"
    with pytest.raises(SystemExit):
        main(["chexpert", "--root", str(root), "--out", str(out), "--uncertain", "maybe"])


def test_missing_csv_column_is_named(root, tmp_path):
    frame = pd.read_csv(root / "valid.csv").drop(columns=["Sex"])
    frame.to_csv(root / "valid.csv", index=False)
    with pytest.raises(ValueError, match=r"valid.csv lacks column\(s\) \['Sex'\]"):
        chexpert.prepare(root, tmp_path / "out", progress=False, verbose=False)


@pytest.mark.parametrize("value", ["yes", "2.0", "positive"])
def test_unknown_finding_value_names_file_line_and_value(root, tmp_path, value):
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    frame.loc[5, "Pleural Effusion"] = value
    frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError) as error:
        chexpert.prepare(root, tmp_path / "out", progress=False, verbose=False)
    message = str(error.value)
    assert "train.csv" in message and "'Pleural Effusion'" in message
    assert message.split("line 7: ")[1].startswith(("'" + value, value))
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_text_codes_of_known_values_are_accepted(root):
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    frame["Pleural Effusion"] = ["1", " 0 ", "-1.0", ""] * (len(frame) // 4)
    frame.to_csv(root / "train.csv", index=False)
    table = chexpert.read_table(root, "train.csv", "Pleural Effusion", "ones", frontal_only=False)
    assert table["label"].tolist() == [1, 0, 1, 0] * (len(frame) // 4)
