"""The pre-biased SimBA-layout set: exact bias counts, the bias in the flagged volumes only, read by data_prep simba."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from benchmarks import prebiased_simba
from pipeline.engine.datalist import load_role


def test_bias_flags_have_exact_counts_per_class_and_follow_the_seed():
    labels = [0] * 10 + [1] * 10
    flags = prebiased_simba.bias_flags(labels, (0.2, 0.8), seed=0, split="train")
    assert flags[:10].sum() == 2 and flags[10:].sum() == 8
    assert np.array_equal(flags, prebiased_simba.bias_flags(labels, (0.2, 0.8), seed=0, split="train"))
    others = [
        prebiased_simba.bias_flags(labels, (0.2, 0.8), seed=s, split=p)
        for s, p in ((1, "train"), (0, "test"))
    ]
    assert all(not np.array_equal(flags, other) for other in others)
    assert prebiased_simba.bias_flags(labels, (0.0, 0.0), seed=0, split="val").sum() == 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setattr(prebiased_simba, "DATA", dict(n=40, size=32, val_fraction=0.2, test_fraction=0.3,
                                                           teacher_size=0))  # fmt: skip
    monkeypatch_module.setattr(prebiased_simba, "SOURCE_DATA", dict(n=12, size=32, seed=1, noise_std=0.045,
                                                                  val_fraction=0.25, test_fraction=0.0, teacher_size=0))  # fmt: skip
    monkeypatch_module.setattr(prebiased_simba, "TEACHER_SIZE", 4)
    output = tmp_path_factory.mktemp("prebiased")
    return output, prebiased_simba.prepare(output, progress=False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_layout_is_simbas_and_data_prep_reads_the_flags(prepared):
    output, (datalist, source) = prepared
    experiment = output / "biased" / "simba" / prebiased_simba.EXPERIMENT
    tables = {
        split: pd.read_csv(experiment / f"{split}.csv", index_col=0) for split in ("train", "val", "test")
    }
    assert list(tables["train"].columns) == prebiased_simba.COLUMNS
    test = tables["test"]
    for label, rate in zip((0, 1), prebiased_simba.BIAS_RATES):
        of_class = test[test["class_label"] == label]
        assert of_class["bias_label"].sum() == round(rate * len(of_class))
    # the datalist's flags are the CSVs' (ids are the split + the file name without suffix)
    items = load_role(datalist, "test")
    by_name = dict(zip(test["filename"].str.removesuffix(".nii.gz"), test["bias_label"]))
    assert {i["id"]: i["bias"] for i in items} == {f"test_{k}": v for k, v in by_name.items()}
    assert all(i["bias"] == 0 for i in load_role(datalist, "teacher"))  # the teacher is bias-free
    assert all(i["bias"] == 0 for r in ("train", "validation") for i in load_role(source, r))
    assert "generated" not in {p.name for p in (output / "biased").iterdir()}  # the raw copy is removed


def test_the_deformation_is_in_the_flagged_volumes_only(prepared, tmp_path):
    output, (datalist, _) = prepared
    items = load_role(datalist, "train")
    # regenerate the raw volumes (the generator is deterministic) to compare
    from data_prep.simba3d import generate

    raw = json.loads(
        generate(tmp_path / "raw", progress=False, verbose=False, seed=0, **prebiased_simba.DATA).read_text()
    )
    raw_by_id = {item["id"]: tmp_path / "raw" / item["image"] for item in raw["train"]}
    changes = {0: [], 1: []}
    for item in items:
        original = raw_by_id[
            "_".join(item["id"].split("_")[2:4])
        ]  # train_00003_simba3d_00009_D... -> simba3d_00009
        stored = np.asarray(nib.load(item["image"]).get_fdata())
        changes[item["bias"]].append(np.abs(stored - np.asarray(nib.load(original).get_fdata())).max())
    assert changes[0] and changes[1]
    assert max(changes[0]) < 1e-3  # int16 storage steps only
    assert min(changes[1]) > 10 * max(max(changes[0]), 1e-4)


def test_table_rows_read_the_reports_test_sets(tmp_path):
    rows = []
    for method, aucs in (("erm", (0.95, 0.70, 0.60)), ("distilled", (0.93, 0.85, 0.82))):
        for test_set, auc, n in zip(("in_distribution", "bias_free", "bias_inverted"), aucs, (300, 150, 74)):
            rows.append(
                {
                    "scenario": "prebiased3d",
                    "method": method,
                    "test_set": test_set,
                    "auc": auc,
                    "n": n,
                    "delta_tpr": {"erm": 0.24, "distilled": 0.08}[method]
                    if test_set == "in_distribution"
                    else 0.5,
                }
            )
    rows.append({"scenario": "other", "method": "erm", "test_set": "bias_free", "auc": 0.1, "n": 1})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    table = prebiased_simba.table_rows(tmp_path, seconds=61.4, threads=2, seed=0)
    assert list(table.columns) == prebiased_simba.TABLE_COLUMNS
    assert table["method"].tolist() == ["erm", "distilled"]
    distilled = table.set_index("method").loc["distilled"]
    assert (distilled["bias_free_auc"], distilled["bias_inverted_auc"], distilled["n_bias_inverted"]) == (
        0.85,
        0.82,
        74,
    )
    assert distilled["seconds"] == 61
    assert distilled["delta_tpr"] == 0.08


def test_rescore_without_a_finished_run_names_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prebiased_simba.main(
            ["--rescore", "--output", str(tmp_path / "out"), "--table", str(tmp_path / "t.csv")]
        )
    assert (
        f"--rescore rewrites {tmp_path / 't.csv'} from {tmp_path / 'out' / 'experiment' / 'report'}"
        in capsys.readouterr().err
    )
