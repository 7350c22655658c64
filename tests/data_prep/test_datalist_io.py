"""Datalist writing: MONAI-readable, relative paths, summary, refusal to overwrite, atomic files."""

import json

import pandas as pd
import pytest
from monai.data import load_decathlon_datalist

from data_prep.datalist_io import check_unique_ids, summarize, write_datalist, write_text_atomic


def _roles(folder):
    (folder / "images").mkdir(parents=True)
    roles = {"train": [], "test": []}
    for i in range(6):
        (folder / "images" / f"a{i}.png").write_bytes(b"")
        roles["train" if i < 4 else "test"].append({"image": f"images/a{i}.png", "label": i % 2, "id": f"a{i}"})
    return roles


def test_written_datalist_loads_with_monai_and_paths_resolve(tmp_path):
    out = tmp_path / "out"
    path = write_datalist(out, _roles(out), {"source": "unit", "seed": 3}, verbose=False)
    items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="train")
    assert [item["id"] for item in items] == ["a0", "a1", "a2", "a3"]
    assert all((out / "images" / f"{item['id']}.png").samefile(item["image"]) for item in items)
    content = json.loads(path.read_text())
    assert content["metadata"]["source"] == "unit" and content["metadata"]["counts"] == {"train": 4, "test": 2}


def test_summary_csv_counts_per_role_and_class(tmp_path):
    out = tmp_path / "out"
    write_datalist(out, _roles(out), {}, verbose=False)
    summary = pd.read_csv(out / "datalist_summary.csv", dtype={"label": str})
    counts = {(r.role, r.label): r.count for r in summary.itertuples()}
    assert counts == {("train", "0"): 2, ("train", "1"): 2, ("train", "all"): 4,
                      ("test", "0"): 1, ("test", "1"): 1, ("test", "all"): 2}


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    roles = _roles(out)
    write_datalist(out, roles, {"version": 1}, verbose=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_datalist(out, roles, {"version": 2}, verbose=False)
    assert json.loads((out / "datalist.json").read_text())["metadata"]["version"] == 1
    write_datalist(out, roles, {"version": 2}, overwrite=True, verbose=False)
    assert json.loads((out / "datalist.json").read_text())["metadata"]["version"] == 2


def test_duplicate_ids_are_an_error(tmp_path):
    out = tmp_path / "out"
    roles = _roles(out)
    roles["train"].append(dict(roles["train"][0]))
    with pytest.raises(ValueError, match="duplicate id.*'a0'"):
        write_datalist(out, roles, {}, verbose=False)
    with pytest.raises(ValueError, match="2 duplicate"):
        check_unique_ids(["x", "y", "x", "y", "z"])


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "file.json"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_summarize_orders_roles():
    summary = summarize({"test": [{"label": 1}], "train": [{"label": 0}, {"label": 1}]})
    assert list(dict.fromkeys(summary["role"])) == ["train", "test"]
