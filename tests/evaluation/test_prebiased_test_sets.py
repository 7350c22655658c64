"""Test sets of pre-biased data: built from the test role's groups, impossible ones recorded."""

import json

import nibabel as nib
import numpy as np
import torch
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged

from pipeline.engine.evaluation import evaluate_test_sets


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
    summaries = evaluate_test_sets(
        network, datalist, [LoadImaged("image", image_only=True), EnsureChannelFirstd("image")],
        {"keys": "image", "artifact": None, "rates": [0.05, 0.95], "seed": 0}, tmp_path / "eval",
        postprocessing=[EnsureTyped("image", dtype=torch.float32, track_meta=False)],
    )  # fmt: skip
    assert list(summaries) == ["in_distribution"]
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
