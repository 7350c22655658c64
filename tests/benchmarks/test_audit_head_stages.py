"""The stage probe's pieces: pooled stage features and the head's input from one pass, cross-fitted probes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from benchmarks import audit_head_stages
from pipeline.audit.control import head_features
from pipeline.audit.scan import predict_log_odds


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 5, 3, stride=2, padding=1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 2),
    ).eval()  # fmt: skip


def test_one_pass_gives_the_log_odds_the_pooled_stages_and_the_heads_input():
    net, images = network(), torch.randn(7, 1, 8, 8)
    odds, features = audit_head_stages.features_and_log_odds(net, images, ["0", "2"], batch_size=3)
    np.testing.assert_allclose(odds, predict_log_odds(net, images), rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        first = net[0](images)
    np.testing.assert_allclose(features["0"].numpy(), first.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-7)
    assert features["2"].shape == (7, 5)
    np.testing.assert_allclose(features["head"].numpy(), head_features(net, images).numpy(), rtol=1e-6)
    # the hooks are gone afterwards
    assert not net[0]._forward_hooks and not net[2]._forward_hooks


def test_the_markdown_has_a_row_per_feature():
    row = {"scenario": "localized2d", "method": "erm", "features": "stage1", "control_auc": 0.61, "n_flagged": 7,
           "n_candidates": 119, "top_name": "contrast_x0.8", "top_score": 17.4, "best_true_name": "patch_4px_bright@top_left",
           "best_true_rank": 18, "best_true_score": 0.4}  # fmt: skip
    text = audit_head_stages.markdown(pd.DataFrame([row, {**row, "features": "head"}]))
    assert "| localized2d | erm | stage1 | 0.610 | 7 of 119 | `contrast_x0.8` 17.40 | `patch_4px_bright@top_left` 18, 0.40 |" in text
    assert len(text.splitlines()) == 4


def test_the_finishing_transforms_are_applied_before_the_network():
    from monai.transforms import Lambdad

    net, images = network(), torch.randn(5, 1, 8, 8)
    doubled = [Lambdad(keys="image", func=lambda x: x * 2)]
    odds, _ = audit_head_stages.features_and_log_odds(net, images, ["0"], doubled)
    np.testing.assert_allclose(odds, predict_log_odds(net, images * 2), rtol=1e-6, atol=1e-9)


def test_the_docs_table_is_what_markdown_renders_from_the_committed_csv():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    table = audit_head_stages.markdown(pd.read_csv(repo / "benchmarks" / "results" / "audit_head_stages.csv"))
    assert "\n".join("  " + line for line in table.splitlines()) in (repo / "docs" / "audit.md").read_text()


def test_the_docs_table_of_heads_fitted_on_the_teacher_images_is_the_committed_csv():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    frame = pd.read_csv(repo / "benchmarks" / "results" / "audit_head_teacher.csv")
    assert set(frame.fitted_on) == {"teacher"}
    table = audit_head_stages.markdown(frame)
    assert "\n".join("  " + line for line in table.splitlines()) in (repo / "docs" / "audit.md").read_text()
