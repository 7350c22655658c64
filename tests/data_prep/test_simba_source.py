"""SimBA CSV reader: bias kept as a group attribute, class x bias strata, bias-free teacher."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from simba_layout import AUTHOR_ROOT, write_dataset, write_split

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
    frame.loc[3, "bias_label"] = 5
    frame.to_csv(csv, index=False)
    assert main(["simba", "--csv", str(csv), "--out", str(tmp_path / "out2")]) == 2
    assert "'bias_label' must hold SimBA's bias codes" in capsys.readouterr().err


def test_published_layout_is_found_through_image_root(tmp_path):
    csvs = write_dataset(tmp_path / "simba")
    assert all(str(p).startswith(AUTHOR_ROOT) for p in pd.read_csv(csvs["train"])["filepath"])
    path = simba_source.prepare(csvs["train"], tmp_path / "out", val_csv=csvs["val"], test_csv=csvs["test"],
                                image_root=tmp_path / "simba" / "data", teacher_size=6, progress=False, verbose=False)
    content = json.loads(path.read_text())
    roles = _roles(path)
    assert {r: len(v) for r, v in roles.items()} == {"train": 34, "teacher": 6, "validation": 12, "test": 20}
    assert all((path.parent / i["image"]).resolve().parent == (tmp_path / "simba" / "data").resolve()
               for r in roles.values() for i in r)  # fmt: skip
    test = pd.read_csv(csvs["test"], index_col=0)
    by_id = {i["id"]: i for i in roles["test"]}
    assert {f[: -len(".nii.gz")] for f in test["filename"]} == set(by_id)
    for _, row in test.iterrows():
        item = by_id[row["filename"][: -len(".nii.gz")]]
        assert (item["label"], item["bias"], item["bias_label"]) == (row["class_label"], row["bias_label"], row["bias_label"])
    assert {i["bias"] for i in roles["teacher"]} == {0}
    assert content["metadata"]["prebiased"] is True
    assert content["metadata"]["parameters"]["no_bias_label"] == 0


def test_author_paths_without_image_root_are_refused_with_the_remedy(tmp_path, capsys):
    csvs = write_dataset(tmp_path / "simba")
    with pytest.raises(ValueError, match="none of the 40 volumes listed exists.*pass --image-root"):
        simba_source.prepare(csvs["train"], tmp_path / "out", progress=False, verbose=False)
    assert main(["simba", "--csv", str(csvs["train"]), "--out", str(tmp_path / "out"), "--no-progress",
                 "--image-root", str(tmp_path / "elsewhere")]) == 2  # fmt: skip
    assert "is --image-root" in capsys.readouterr().err
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_multi_bias_codes_mark_no_bias_with_3(tmp_path):
    root = tmp_path / "simba"
    rows = [(label, code) for label in (0, 1) for code in (0, 1, 2, 3) for _ in range(5)]
    csv = write_split(root, "train", rows, no_bias=3)
    path = simba_source.prepare(csv, tmp_path / "out", image_root=root / "data", teacher_size=4,
                                progress=False, verbose=False)  # fmt: skip
    items = [i for r in _roles(path).values() for i in r]
    assert len(items) == 40
    assert all(i["bias"] == int(i["bias_label"] != 3) for i in items)
    assert {i["bias_label"] for i in _roles(path)["teacher"]} == {3}
    # the user can name the code instead of relying on the detection
    main_args = ["simba", "--csv", str(csv), "--image-root", str(root / "data"), "--teacher-size", "4",
                 "--no-progress", "--no-bias-label", "0"]  # fmt: skip
    assert main([*main_args, "--out", str(tmp_path / "out0")]) == 0
    items = [i for r in _roles(tmp_path / "out0" / "datalist.json").values() for i in r]
    assert all(i["bias"] == int(i["bias_label"] != 0) for i in items)


def test_no_bias_code_detection():
    assert simba_source.no_bias_code(pd.Series([0, 1, 1])) == 0
    assert simba_source.no_bias_code(pd.Series([0, 1, 3])) == 3
    assert simba_source.no_bias_code(pd.Series([0, 2])) == 3
    with pytest.raises(ValueError, match="no_bias_label must be one of"):
        simba_source.no_bias_code(pd.Series([0, 1]), 7)



def test_simba_as_its_own_code_publishes_it_reads_with_one_command(tmp_path):
    """Per-split folders numbered from 00000 each, CSVs apart, another machine's paths, multi-bias codes."""
    from simba_layout import write_published

    multi = [(label, code) for label in (0, 1) for code in (0, 1, 2, 3, 3, 3)]  # 0 both, 1 intensity, 2 shape, 3 none
    root = write_published(tmp_path / "SBB", "far_bias", {"train": multi * 3, "val": multi, "test": multi}, no_bias=3)
    assert main(["simba", "--simba-root", str(root), "--experiment", "far_bias", "--out", str(tmp_path / "out"),
                 "--teacher-size", "4", "--no-progress"]) == 0  # fmt: skip
    content = json.loads((tmp_path / "out" / "datalist.json").read_text())
    items = [item for role in ("train", "teacher", "validation", "test") for item in content[role]]
    assert len(items) == 36 + 12 + 12 and len({item["id"] for item in items}) == len(items)
    assert {item["id"][:5] for item in content["test"]} == {"test_"} and len(content["validation"]) == 12
    folders = {(tmp_path / "out" / item["image"]).resolve().parent for item in items}  # written relative to out
    assert folders == {(root / "datasets" / "far_bias" / split).resolve() for split in ("train", "val", "test")}
    assert {item["bias_type"] for item in items} == {"both", "intensity", "shape", "none"}
    assert all(item["bias"] == int(item["bias_type"] != "none") for item in items)
    assert all(item["bias_type"] == "none" for item in content["teacher"])


def test_simba_layout_needs_both_flags_and_names_a_missing_csv(tmp_path, capsys):
    assert main(["simba", "--simba-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--simba-root ROOT --experiment EXP" in capsys.readouterr().err
    assert main(["simba", "--simba-root", str(tmp_path), "--experiment", "x", "--out", str(tmp_path / "o")]) == 2
    assert "x/train.csv not found" in capsys.readouterr().err
