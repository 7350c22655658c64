"""Test sets of pre-biased data: built from the test role's groups, impossible ones recorded."""

import json
from functools import partial

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged

from pipeline.engine.evaluation import TestSetEvaluation, evaluation_dataset


def _datalist(folder, rows):
    items = []
    for index, (label, bias) in enumerate(rows):
        path = folder / f"v{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((4, 4, 4), float(label + bias), np.float32), np.eye(4)), path)
        items.append({"image": path.name, "label": label, "id": f"v{index}", "bias": bias})
    (folder / "datalist.json").write_text(json.dumps({"test": items}))
    return folder / "datalist.json"


def test_sets_without_both_classes_are_reported_not_possible(tmp_path):
    # every positive carries the bias: no bias-free positives, no bias-inverted positives
    datalist = _datalist(tmp_path, [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 1), (1, 1)])
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    injection = {"keys": "image", "artifact": None, "rates": [0.05, 0.95], "seed": 0}
    dataset = partial(
        evaluation_dataset, datalist, preprocessing=[LoadImaged("image", image_only=True), EnsureChannelFirstd("image")],
        injection=injection, postprocessing=[EnsureTyped("image", dtype=torch.float32, track_meta=False)],
    )  # fmt: skip
    evaluation = TestSetEvaluation(
        dataset, partial(DataLoader, batch_size=4), partial(SupervisedEvaluator, device="cpu", network=network,
        decollate=False), tmp_path / "eval", datalist, injection,
    )  # fmt: skip
    rows = evaluation.run()  # the protocol's sets; test_ood, absent from this datalist, is skipped
    assert [row["test_set"] for row in rows] == ["in_distribution"]
    assert list(json.loads((tmp_path / "eval" / "metrics.json").read_text())) == ["in_distribution"]
    record = json.loads((tmp_path / "eval" / "test_sets.json").read_text())
    assert record["evaluated"] == ["in_distribution"] and record["prebiased"] is True
    assert record["not_possible"] == {
        "bias_free": "the bias-free test items hold class(es) [0] only (AUC needs both)",
        "bias_inverted": "the bias-inverted resample of the test items hold class(es) [0] only (AUC needs both)",
        "cf_with": "no counterfactual pairs: the bias is baked into the images",
    }
    assert sorted(p.name for p in (tmp_path / "eval").glob("predictions_*.csv")) == [
        "predictions_in_distribution.csv"
    ]
