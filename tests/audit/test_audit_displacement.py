"""The 3D verdict's displacement condition (pipeline.audit: docs/audit.md, "Per unit of feature
displacement"): how far a candidate moves the head features, and a volume model flagged only where
a candidate moves it beyond the control by more than the bound per unit of that displacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.audit.control import feature_displacement, feature_spread, per_displacement, train_control
from pipeline.audit.data import AuditImages
from pipeline.audit.model import AuditModel
from pipeline.audit.report import THRESHOLDS, VOLUME_DISPLACEMENT_BOUND, verdict
from pipeline.audit.run import audit_model

SIDE = 16


def test_spread_and_displacement_are_distances_in_units_of_the_clean_features_spread():
    clean = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # mean (1, 0), each 1 away: spread 1
    assert feature_spread(clean) == pytest.approx(1.0)
    assert feature_spread(3 * clean) == pytest.approx(3.0)
    moved = clean + torch.tensor([0.0, 3.0])  # every image 3 away
    assert feature_displacement(clean, moved, feature_spread(clean)) == pytest.approx(3.0)
    # twice the spread, half the displacement: the unit is the clean features' own spread
    assert feature_displacement(2 * clean, 2 * clean + torch.tensor([0.0, 3.0]), feature_spread(2 * clean)) == pytest.approx(1.5)
    half = clean.clone()
    half[1] += torch.tensor([4.0, 0.0])  # one of two moved by 4: mean distance 2
    assert feature_displacement(clean, half, 1.0) == pytest.approx(2.0)
    assert feature_displacement(clean, clean, 0.0) == 0.0
    assert feature_displacement(clean[:1], moved[:1], 0.0) == float("inf")
    assert per_displacement(1.4, 2.0) == pytest.approx(0.7)
    # features left in place while the model still moves: the ratio is unbounded, not a division error
    assert per_displacement(1.0, 0.0) == pytest.approx(1e12)


def _entry(name, excess, per_displacement=None):
    entry = {"name": name, "kind": "diffuse", "region": "global", "flip_rate": 0.3, "flip_rate_ci": [0.2, 0.4],
             "change_rms": 0.1, "excess_flip_rate": 0.1, "excess_flip_rate_ci": [0.0, 0.2],
             "excess_shift": excess, "excess_shift_ci": [excess - 0.1, excess + 0.1]}  # fmt: skip
    if per_displacement is not None:
        entry["excess_per_displacement"] = per_displacement
    return entry


def test_with_a_bound_a_candidate_beyond_the_threshold_must_also_move_the_model_far_per_displacement():
    entries = [
        _entry("bias_field_0.5", 3.04, 0.54),  # the largest excess, but the features moved far: spared
        _entry("patch_8px_bright@top", 1.66, 0.82),  # beyond both: flagged
        _entry("gamma_0.7", 0.40, 5.0),  # far per displacement, but under the threshold
    ]
    said = verdict(entries, displacement_bound=0.70)
    assert said["flagged"] == ["patch_8px_bright@top"] and said["spared"] == ["bias_field_0.5"]
    assert said["displacement_bound"] == 0.70 and said["threshold"] == THRESHOLDS["excess_shift"]
    # the strongest named is the strongest flagged one, not the spared candidate of larger excess
    assert "The strongest is `patch_8px_bright@top`" in said["text"] and said["suspect"] == "patch_8px_bright@top"
    assert "by more than 0.70 per unit of head-feature displacement" in said["text"]
    assert "1 more candidate(s) move it beyond 1 but by at most 0.70" in said["text"] and "`bias_field_0.5`, 3.040" in said["text"]
    # the bound is a strict lower limit, as the threshold is
    assert verdict([_entry("blur", 1.5, 0.70)], displacement_bound=0.70)["flagged"] == []
    # no bound: the threshold alone, as in 2D
    alone = verdict(entries)
    assert alone["flagged"] == ["bias_field_0.5", "patch_8px_bright@top"] and alone["spared"] == []
    assert alone["displacement_bound"] is None and "per unit" not in alone["text"]


def test_a_model_whose_every_accusation_is_spared_is_not_accused():
    said = verdict([_entry("bias_field_0.5", 3.04, 0.54), _entry("patch_8px_dark@center", 2.86, 0.66)], displacement_bound=0.70)
    assert said["flagged"] == [] and said["spared"] == ["bias_field_0.5", "patch_8px_dark@center"]
    assert said["text"].startswith("**No candidate is held against the model**")
    assert "**: 2 candidate(s) move it beyond 1 but by at most 0.70" in said["text"]


def test_without_displacements_the_bound_does_not_apply():
    # a retrained control (no head features read) or a flip-rate score: the threshold alone, and said so
    said = verdict([_entry("bias_field_0.5", 3.04)], displacement_bound=0.70)
    assert said["flagged"] == ["bias_field_0.5"] and said["displacement_bound"] is None
    flips = [{k: v for k, v in _entry("noise", 2.0, 0.1).items() if not k.startswith("excess_shift")}]
    assert verdict(flips, displacement_bound=0.70)["displacement_bound"] is None


def _volumes(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(n, 1, 16, 16, 16) noisy volumes, alternating labels; positives have a dark cube at the centre."""
    rng = np.random.default_rng(seed)
    x = 0.5 + 0.08 * rng.standard_normal((n, 1, SIDE, SIDE, SIDE))
    labels = np.arange(n) % 2
    centre = slice(SIDE // 2 - 3, SIDE // 2 + 3)
    x[labels == 1, 0, centre, centre, centre] -= 0.25
    return torch.as_tensor(x, dtype=torch.float32), labels


@pytest.fixture(scope="module")
def volume_model() -> AuditModel:
    from monai.networks.nets import Classifier

    x, y = _volumes(160, seed=1)
    net = Classifier(in_shape=[1, SIDE, SIDE, SIDE], classes=2, channels=[4, 8], strides=[2, 2])
    net = train_control(net, x, y, epochs=8, learning_rate=3e-3, batch_size=32, seed=0)[0]
    return AuditModel(network=net.eval(), preprocessing=[], finishing=[], spatial_dims=3, in_channels=1,
                      num_classes=2, image_size=(SIDE,) * 3, source={"kind": "test", "checkpoint": "-"})  # fmt: skip


def _audit(model: AuditModel, out, **options) -> dict:
    x, y = _volumes(80, seed=2)
    data = AuditImages(x, [f"v{i}" for i in range(80)], y.astype(np.int64), "test", 80)
    return audit_model(model, data, out, families=["noise", "bias_field", "patch"], depth_cells=1, screen_images=None,
                       occlusion_per_class=2, progress=False, **options)  # fmt: skip


def test_a_volume_audit_measures_each_candidates_displacement_and_applies_the_bound(volume_model, tmp_path):
    from pipeline.audit.control import head_features
    from pipeline.audit.scan import add_artifact

    audit = _audit(volume_model, tmp_path / "default")
    assert audit["control"]["kind"] == "head" and audit["verdict"]["score"] == "excess_shift"
    assert audit["verdict"]["displacement_bound"] == audit["settings"]["displacement_bound"] == VOLUME_DISPLACEMENT_BOUND
    x, _ = _volumes(80, seed=2)
    ids = [f"v{i}" for i in range(80)]
    clean = head_features(volume_model.network, x)
    from pipeline.audit.candidates import candidate_library

    library = {c.name: c for c in candidate_library((SIDE,) * 3, ["noise", "bias_field", "patch"], 1)}
    for entry in audit["candidates"][:3]:  # measured again here, from a separate forward pass
        moved = head_features(volume_model.network, add_artifact(x, ids, library[entry["name"]].artifact))
        expected = feature_displacement(clean, moved, feature_spread(clean))
        assert entry["feature_displacement"] == pytest.approx(expected, rel=1e-4)
        assert entry["excess_per_displacement"] == pytest.approx(entry["excess_shift"] / expected, rel=1e-4)
    beyond = {e["name"] for e in audit["candidates"] if e["excess_shift"] > THRESHOLDS["excess_shift"]}
    far = {e["name"] for e in audit["candidates"] if e["excess_per_displacement"] > VOLUME_DISPLACEMENT_BOUND}
    assert set(audit["verdict"]["flagged"]) == beyond & far
    assert set(audit["verdict"]["spared"]) == beyond - far
    saved = json.loads((tmp_path / "default" / "audit.json").read_text())
    assert saved["settings"]["displacement_bound"] == VOLUME_DISPLACEMENT_BOUND
    text = (tmp_path / "default" / "audit.md").read_text()
    assert "**In volumes** a candidate is flagged only when" in text and "per unit of head-feature displacement" in text
    assert "| head-feature displacement | beyond the control per displacement |" in text
    assert "spared 8 of 9 bias-free models, not all" in text  # the report says how far the bound goes
    # 0 turns the bound off: the threshold alone flags
    off = _audit(volume_model, tmp_path / "off", displacement_bound=0)
    assert off["verdict"]["displacement_bound"] is None and off["settings"]["displacement_bound"] is None
    assert set(off["verdict"]["flagged"]) == {e["name"] for e in off["candidates"] if e["excess_shift"] > 1.0}
    assert "**In volumes**" not in (tmp_path / "off" / "audit.md").read_text()


@pytest.mark.parametrize("bound", [-0.5, float("nan")])
def test_a_negative_or_missing_bound_is_refused_with_the_options_name(volume_model, tmp_path, bound):
    with pytest.raises(ValueError, match=r"--displacement-bound, bundle audit_displacement_bound\) must be a number >= 0"):
        _audit(volume_model, tmp_path / "bad", displacement_bound=bound)
    assert not (tmp_path / "bad" / "audit.json").exists()
