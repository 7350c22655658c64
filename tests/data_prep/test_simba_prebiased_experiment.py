"""SimBA as published, end to end: its CSV layout -> data_prep simba -> a pre-biased experiment.

The bias is in the volumes, so nothing is injected: the bias flag comes from the datalist, the
reference trains on the bias-free training items, and the test sets are the test role's groups
(no counterfactual pairs), which the report states.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from monai.bundle import ConfigParser
from simba_layout import write_dataset

from data_prep.cli import main as data_prep_main
from pipeline.bundles import config_files
from pipeline.engine.datalist import load_role
from pipeline.evaluation.verification import verify_report
from pipeline.experiment import METHODS, ExperimentConfig, run_experiment, run_settings
from pipeline.transforms.injection import prebiased_items

SCENARIO = "prebiased3d"


def run_parser(config, scenario: str, method: str) -> ConfigParser:
    """The merged, overridden train config of one experiment run (nothing instantiated yet)."""
    spec = METHODS[method]
    parser = ConfigParser()
    parser.read_config(config_files(spec.bundle, "train", scenario, spec.overrides))
    parser.update(run_settings(config, scenario, method))
    return parser


@pytest.fixture(scope="module")
def prebiased_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("simba")
    csvs = write_dataset(root / "published", sizes=(40, 12, 40))
    out = root / "datalist"
    code = data_prep_main(["simba", "--csv", str(csvs["train"]), "--val-csv", str(csvs["val"]),
                           "--test-csv", str(csvs["test"]), "--image-root", str(root / "published" / "data"),
                           "--teacher-size", "6", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    datalist = out / "datalist.json"
    config = ExperimentConfig(
        output=str(root / "experiment"), scenarios=[SCENARIO], methods=["erm", "reference"],
        settings={"datalist": str(datalist), "image_size": [16, 16, 16], "max_epochs": 1, "batch_size": 8,
                  "progress_bar": False, "tensorboard": False, "precise_bn_batches": 1},
    )  # fmt: skip
    return datalist, config, run_experiment(config)


def test_report_has_the_possible_test_sets_and_says_which(prebiased_run):
    _, _, report = prebiased_run
    assert verify_report(report) == []
    results = pd.read_csv(report / "results.csv")
    assert set(results["test_set"]) == {"in_distribution", "bias_free", "bias_inverted"}
    assert set(results["method"]) == {"erm", "reference"}
    text = " ".join((report / "results.md").read_text().split())
    assert "Evaluated: in_distribution, bias_free, bias_inverted." in text
    assert "Not possible: cf_with (no counterfactual pairs" in text
    summary = json.loads((report / "acceptance.json").read_text())[SCENARIO]
    assert summary["erm_delta_tpr_counterfactual"] is None


def test_test_sets_are_the_test_roles_groups_with_the_datalists_flags(prebiased_run):
    datalist, config, _ = prebiased_run
    test = load_role(datalist, "test", check_files=False)
    flags = {i["id"]: i["bias"] for i in test}
    folder = datalist.parent.parent / "experiment" / SCENARIO / "erm" / "eval"
    read = {name: pd.read_csv(folder / f"predictions_{name}.csv", dtype={"id": str}) for name in
            ("in_distribution", "bias_free", "bias_inverted")}  # fmt: skip
    assert dict(zip(read["in_distribution"]["id"], read["in_distribution"]["bias"])) == flags
    assert set(read["bias_free"]["id"]) == {i for i, b in flags.items() if b == 0}
    assert set(read["bias_free"]["bias"]) == {0}
    inverted = prebiased_items(test, "inverted", seed=0)
    assert list(read["bias_inverted"]["id"]) == [i["id"] for i in inverted]
    rates = read["bias_inverted"].groupby("label")["bias"].mean()
    assert rates[0] > rates[1]  # the training correlation (positives biased) is reversed
    assert not (folder / "predictions_cf_with.csv").exists()
    record = json.loads((folder / "test_sets.json").read_text())
    assert record["prebiased"] is True and list(record["not_possible"]) == ["cf_with"]


def test_reference_trains_on_the_bias_free_training_items(prebiased_run):
    datalist, config, _ = prebiased_run
    train = load_role(datalist, "train", check_files=False)
    reference = run_parser(config, SCENARIO, "reference").get_parsed_content("train#items")
    assert [i["id"] for i in reference] == [i["id"] for i in train if i["bias"] == 0]
    erm = run_parser(config, SCENARIO, "erm").get_parsed_content("train#items")
    assert [i["id"] for i in erm] == [i["id"] for i in train]
    validation = run_parser(config, SCENARIO, "reference").get_parsed_content("validate#items")
    assert validation and {i["bias"] for i in validation} == {0}
