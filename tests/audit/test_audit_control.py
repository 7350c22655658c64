"""The audit's control (pipeline.audit.control): the network trained afresh on the audited images'
labels, cross-fitted, as the baseline of every candidate.

In-memory images (no files): the finding is a dark blob at the centre of positives; a shortcut
model learnt a bright patch in the top-left corner instead; a model that reads the finding is
moved by dark marks at the centre as much as its control is, so it is not accused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.audit.control import (
    HeadControl,
    assign_folds,
    excess_effect,
    finding_separation,
    fit_head_control,
    fit_retrained_control,
    fresh_copy,
    head_features,
    train_control,
)
from pipeline.audit.data import UNLABELLED, AuditImages
from pipeline.audit.model import AuditModel
from pipeline.audit.report import THRESHOLDS, VOLUME_DISPLACEMENT_BOUND, candidate_table, verdict
from pipeline.audit.run import audit_model

SIZE = 32
FINDING = 0.15  # the dark blob: fainter than the patch, as the finding of the scenarios is


def images(n: int, seed: int, finding: float, shortcut: bool) -> tuple[torch.Tensor, np.ndarray]:
    """(n, 1, SIZE, SIZE) noisy images and alternating labels; positives get the finding (a dark
    8-pixel blob at the centre, ``finding`` below the background) and/or the shortcut (a bright
    4-pixel patch in the top-left corner)."""
    rng = np.random.default_rng(seed)
    x = 0.5 + 0.08 * rng.standard_normal((n, 1, SIZE, SIZE))
    labels = np.arange(n) % 2
    centre = slice(SIZE // 2 - 4, SIZE // 2 + 4)
    for i in np.flatnonzero(labels == 1):
        x[i, 0, centre, centre] -= finding
        if shortcut:
            x[i, 0, :4, :4] = 1.0
    return torch.as_tensor(x, dtype=torch.float32), labels


def network() -> torch.nn.Module:
    from monai.networks.nets import Classifier

    return Classifier(in_shape=[1, SIZE, SIZE], classes=2, channels=[4, 8], strides=[2, 2])


def trained(finding: float, shortcut: bool) -> torch.nn.Module:
    x, y = images(400, seed=1, finding=finding, shortcut=shortcut)
    return train_control(network(), x, y, epochs=15, learning_rate=3e-3, batch_size=32, seed=0)[0]


def audit_data(n: int = 240) -> AuditImages:
    """Clean images that carry the finding (no shortcut), as a bias-free test set does."""
    x, y = images(n, seed=2, finding=FINDING, shortcut=False)
    return AuditImages(x, [f"s{i}" for i in range(n)], y.astype(np.int64), "test", n)


def as_audit_model(net: torch.nn.Module) -> AuditModel:
    return AuditModel(network=net.eval(), preprocessing=[], finishing=[], spatial_dims=2, in_channels=1,
                      num_classes=2, image_size=(SIZE, SIZE), source={"kind": "test", "checkpoint": "-"})  # fmt: skip


FAST = {"families": ["patch"], "screen_images": None, "occlusion_per_class": 2, "control_epochs": 15,
        "control_learning_rate": 3e-3, "progress": False}  # fmt: skip


@pytest.fixture(scope="module")
def models():
    """A model trained on the finding alone, and one trained where positives also carry the patch and
    the finding is six times fainter (the patch is the easier cue, as in ERM's training data)."""
    return {"finding": trained(FINDING, shortcut=False), "shortcut": trained(FINDING / 6, shortcut=True)}


@pytest.fixture(scope="module", params=["head", "retrain"])
def audits(request, models, tmp_path_factory):
    """The scan of both models with each control."""
    root = tmp_path_factory.mktemp(f"control_{request.param}")
    data = audit_data()
    return root, {
        name: audit_model(as_audit_model(net), data, root / name, control=request.param, **FAST)
        for name, net in models.items()
    }


def score(audit: dict) -> str:
    return audit["verdict"]["score"]


def by_name(audit: dict) -> dict:
    return {c["name"]: c for c in audit["candidates"]}


def test_a_model_that_reads_the_finding_is_moved_by_it_but_not_accused(audits):
    audit = audits[1]["finding"]
    assert audit["control"]["auc"] > 0.9  # the control learnt the finding from the audited images
    mimic = by_name(audit)["patch_8px_dark@center"]
    # the raw flip rate accuses it: a dark mark at the centre looks like the finding ...
    assert mimic["flip_rate"] > 0.3
    # ... to its control as well, so nothing moves it beyond the control
    assert mimic["control_flip_rate"] > 0.3 and mimic["control_shift_in_findings"] > 0.3
    assert score(audit) == "excess_shift"
    assert max(c["excess_shift"] for c in audit["candidates"]) <= THRESHOLDS["excess_shift"]
    assert audit["verdict"]["flagged"] == []
    assert "No candidate moves the model beyond the threshold" in audit["verdict"]["text"]


def test_a_shortcut_model_is_accused_of_its_patch_beyond_the_control(audits):
    audit = audits[1]["shortcut"]
    assert score(audit) == "excess_shift"
    top = max(audit["candidates"], key=lambda c: c["excess_shift"])
    assert (top["family"], top["region"], top["params"]["intensity"] > 0.5) == ("patch", "top_left", True)
    assert top["excess_shift"] > THRESHOLDS["excess_shift"] and top["control_flip_rate"] < 0.2
    low, high = top["excess_shift_ci"]
    assert low < top["excess_shift"] < high
    assert top["name"] in audit["verdict"]["flagged"]
    # the finding-like mark moves it as the control, in findings' worth
    assert by_name(audit)["patch_8px_dark@center"]["excess_shift"] < THRESHOLDS["excess_shift"]


def test_the_report_sorts_by_the_excess_and_names_the_control(audits):
    root, audit = audits[0], audits[1]["shortcut"]
    saved = json.loads((root / "shortcut" / "audit.json").read_text())
    assert saved["control"]["folds"] == 2 and saved["control"]["auc"] == audit["control"]["auc"]
    assert saved["control"]["kind"] in ("head", "retrain")
    assert saved["settings"]["threshold"] == saved["verdict"]["threshold"] == THRESHOLDS["excess_shift"]
    text = (root / "shortcut" / "audit.md").read_text()
    assert "The control" in text and "shift beyond the control (95% CI)" in text
    # the report says how far a flag goes and how to test one
    assert "bias-free 3D models too" in text and "`--artifact`" in text
    first_row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    top = max(audit["candidates"], key=lambda c: c["excess_shift"])
    assert f"`{top['name']}`" in first_row


def test_the_scan_measures_shifts_in_the_networks_unclipped_log_odds(models):
    import copy

    from pipeline.audit.candidates import candidate_library
    from pipeline.audit.control import output_layer
    from pipeline.audit.scan import add_artifact, predict_log_odds, scan

    # the shortcut model with its logits scaled up 20x: as sure of itself as a trained network often is
    data, net = audit_data(120), copy.deepcopy(models["shortcut"])
    with torch.no_grad():
        output_layer(net).weight.mul_(20)
        output_layer(net).bias.mul_(20)
    control, _ = fit_head_control(net, data)
    patch = next(c for c in candidate_library((SIZE, SIZE), ["patch"]) if c.name == "patch_8px_bright@top_left")
    entry = scan(net, data, [patch], screen_images=None, progress=False, control=control)[0][0]
    without = predict_log_odds(net, data.images)
    with_patch = predict_log_odds(net, add_artifact(data.images, data.ids, patch.artifact))
    separation = without[data.labels == 1].mean() - without[data.labels == 0].mean()
    assert entry["shift_in_findings"] == pytest.approx((with_patch - without).mean() / separation, rel=1e-6)
    # the patch drives it far past certainty, beyond what a probability clipped at 1e-6 expresses
    # (log-odds 13.8): a clip would understate the shift
    assert np.abs(with_patch).max() > 2 * 13.8
    assert entry["control_shift_in_findings"] == pytest.approx(
        (control.predict(add_artifact(data.images, data.ids, patch.artifact), np.arange(120))
         - control.predict(data.images, np.arange(120))).mean() / control.separation, rel=1e-6)  # fmt: skip


def test_every_image_is_scored_by_a_control_that_never_saw_it():
    data = audit_data(120)
    control, reason = fit_retrained_control(network(), data, epochs=2, learning_rate=3e-3, progress=False)
    assert reason is None and control.folds.shape == (120,)
    # an image's prediction comes from the network of its own fold, which was trained on the other fold
    for k, net in enumerate(control.networks):
        index = np.flatnonzero(control.folds == k)
        with torch.no_grad():
            logits = net(data.images[torch.as_tensor(index)]).double()
        expected = (logits[:, 1] - logits[:, 0]).numpy()  # the control speaks in log-odds of class 1
        np.testing.assert_allclose(control.predict(data.images[torch.as_tensor(index)], index), expected, rtol=1e-5, atol=1e-5)
    # the same seed, the same controls
    again, _ = fit_retrained_control(network(), data, epochs=2, learning_rate=3e-3, progress=False)
    every = np.arange(120)
    np.testing.assert_allclose(again.predict(data.images, every), control.predict(data.images, every), rtol=1e-5, atol=1e-6)


def test_the_head_control_reads_the_networks_features_with_a_probe_per_fold(models):
    data, net = audit_data(120), models["finding"]
    control, reason = fit_head_control(net, data)
    assert reason is None and isinstance(control, HeadControl) and len(control.probes) == 2
    features = head_features(net, data.images)
    assert features.ndim == 2 and features.shape[0] == 120
    every = np.arange(120)
    # the scan's single pass (features captured while the model runs) gives the control's own predictions
    np.testing.assert_allclose(control.predict_features(features, every), control.predict(data.images, every), rtol=1e-9)
    # each fold's probe was fitted without that fold: refitting on the other fold reproduces it
    from pipeline.evaluation.linear_probes import fit_linear_probe

    other = np.flatnonzero(control.folds == 1)
    refit = fit_linear_probe(features[torch.as_tensor(other)], data.labels[other])
    mine = np.flatnonzero(control.folds == 0)
    logits = refit.logits(features[torch.as_tensor(mine)])
    np.testing.assert_allclose(control.predict(data.images[torch.as_tensor(mine)], mine),
                               (logits[:, 1] - logits[:, 0]).numpy(), rtol=1e-9)  # fmt: skip
    assert control.auc > 0.9 and control.separation > 0
    # a network whose last linear layer does not give two logits has no head control
    headless = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 3))
    assert fit_head_control(headless, data)[1].startswith("no control: the network has no last linear layer")


def test_folds_are_stratified_seeded_and_cover_every_image():
    labels = np.array([0] * 30 + [1] * 20 + [UNLABELLED] * 7)
    folds = assign_folds(labels, 2, seed=3)
    assert set(folds) == {0, 1}
    for cls, size in ((0, 30), (1, 20)):
        assert sorted(np.bincount(folds[labels == cls], minlength=2)) == [size // 2, size // 2]
    assert np.array_equal(folds, assign_folds(labels, 2, seed=3))
    assert not np.array_equal(folds, assign_folds(labels, 2, seed=4))


def test_a_fresh_copy_has_the_architecture_and_new_weights():
    net = network()
    twin = fresh_copy(net, seed=0)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(twin.parameters(), net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(twin.parameters(), fresh_copy(net, seed=0).parameters()))
    # batch-norm statistics start again too
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    bn.train()(torch.randn(4, 1, 8, 8) + 5)
    assert fresh_copy(bn, seed=0)[1].running_mean.abs().max() == 0


def test_excess_is_the_models_flips_minus_the_controls_on_the_same_images():
    # log-odds of class 1: a prediction is class 1 from 0
    without = np.array([-1.4, -1.4, 1.4, 1.4])
    with_artifact = np.array([0.8, 0.4, 2.2, -0.8])  # flips images 0, 1, 3
    control_without = np.array([-2.2, 2.2, -0.4, -0.4])
    control_with = np.array([0.4, 2.2, -0.4, -0.4])  # flips image 0
    effect = excess_effect(without, with_artifact, control_without, control_with)
    assert effect["control_flip_rate"] == pytest.approx(0.25)
    assert effect["excess_flip_rate"] == pytest.approx(0.5)
    low, high = effect["excess_flip_rate_ci"]
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.96 * np.std([0, 1, 0, 1], ddof=1) / 2)


def test_shifts_are_measured_in_each_models_own_findings_worth():
    labels = np.array([0, 0, 1, 1])
    # the model sets positives 4 log-odds above negatives, the (weaker) control 1
    assert finding_separation(labels, np.array([-2, -2, 2, 2])) == pytest.approx(4)
    assert finding_separation(labels, np.array([0.5, 0.5, -0.5, -0.5])) is None  # separates the wrong way
    assert finding_separation(np.array([0, 0]), np.array([0, 1])) is None
    without, control_without = np.array([-2.0, -2, 2, 2]), np.array([-0.5, -0.5, 0.5, 0.5])
    # a finding-like mark: one finding's worth for both, though the control's log-odds move 4x less
    same = excess_effect(without, np.array([2.0, 2, 6, 6]), control_without, np.array([0.5, 0.5, 1.5, 1.5]), (4.0, 1.0))
    assert same["shift_in_findings"] == pytest.approx(1) and same["control_shift_in_findings"] == pytest.approx(1)
    assert same["excess_shift"] == pytest.approx(0, abs=1e-9)
    # a shortcut moves the model two findings' worth towards class 0 and the control not at all
    shortcut = excess_effect(without, np.array([-10.0, -10, -6, -6]), control_without, control_without, (4.0, 1.0))
    assert shortcut["shift_in_findings"] == pytest.approx(-2) and shortcut["excess_shift"] == pytest.approx(2)
    low, high = shortcut["excess_shift_ci"]
    assert low == pytest.approx(2) and high == pytest.approx(2)  # every image moved alike
    # a control moved the other way explains none of the model's shift, and adds nothing to it:
    # the excess is the model's own two findings' worth, not the 2 + 3 between them
    opposite = excess_effect(without, np.array([-10.0, -10, -6, -6]), control_without, control_without + 3, (4.0, 1.0))
    assert opposite["control_shift_in_findings"] == pytest.approx(3) and opposite["excess_shift"] == pytest.approx(2)
    # part of the way: the control explains what it shares
    part = excess_effect(without, np.array([-10.0, -10, -6, -6]), control_without, control_without - 0.5, (4.0, 1.0))
    assert part["excess_shift"] == pytest.approx(1.5)
    # log-odds are not clipped: a change far beyond certainty still counts in full (a probability
    # clipped at 1e-6 would cap the model's shift at 27.6 / 4 and report 3.45 here)
    beyond = excess_effect(without, np.array([-102.0, -102, -98, -98]), control_without, control_without, (4.0, 1.0))
    assert beyond["excess_shift"] == pytest.approx(25)
    # without a separation (no labels) only the flip rates are compared
    assert "excess_shift" not in excess_effect(without, without, control_without, control_without, (None, 1.0))


def test_too_few_labels_train_no_control_and_say_why(tmp_path):
    data = audit_data(60)
    data.labels[:50] = UNLABELLED
    control, reason = fit_retrained_control(network(), data, progress=False)
    assert control is None and "20 labelled images of each class" in reason
    audit = audit_model(as_audit_model(network()), data, tmp_path, **{**FAST, "control_epochs": 1})
    assert audit["control"] == {"kind": "head", "reason": reason}
    assert audit["verdict"]["score"] == "flip_rate" and "control_flip_rate" not in audit["candidates"][0]
    assert "No control" in (tmp_path / "audit.md").read_text()


def test_the_verdict_without_a_control_reads_raw_flip_rates():
    entries = [
        {"name": "a", "kind": "diffuse", "region": "global", "flip_rate": 0.5, "flip_rate_ci": [0.4, 0.6], "change_rms": 0.2, "n": 9, "delta_tpr": None, "delta_fpr": None, "mean_prob_shift": 0.1},
        {"name": "b", "kind": "diffuse", "region": "global", "flip_rate": 0.45, "flip_rate_ci": [0.35, 0.55], "change_rms": 0.1, "n": 9, "delta_tpr": None, "delta_fpr": None, "mean_prob_shift": 0.1},
    ]
    result = verdict(entries, 0.2)
    assert result["score"] == "flip_rate" and result["flagged"] == ["a", "b"] and result["suspect"] == "b"
    assert "control" not in candidate_table(entries)


def test_the_scan_records_how_far_each_candidate_moves_the_head_features_and_2d_keeps_the_threshold(models, audits):
    from pipeline.audit.candidates import candidate_library
    from pipeline.audit.control import feature_displacement, feature_spread
    from pipeline.audit.scan import add_artifact, scan

    root, audit = audits[0], audits[1]["shortcut"]
    if audit["control"]["kind"] == "retrain":
        # the retrained control reads no head features: no displacement, and the threshold alone judges
        assert all("feature_displacement" not in c for c in audit["candidates"])
        assert audit["verdict"]["displacement_bound"] is None
        return
    # 2D: the displacement is measured and shown, but the verdict keeps the threshold alone
    assert audit["verdict"]["displacement_bound"] is None and audit["settings"]["displacement_bound"] is None
    assert set(audit["verdict"]["flagged"]) == {c["name"] for c in audit["candidates"] if c["excess_shift"] > 1.0}
    assert "| head-feature displacement |" in (root / "shortcut" / "audit.md").read_text()
    data, net = audit_data(120), models["shortcut"]
    control, _ = fit_head_control(net, data)
    library = [c for c in candidate_library((SIZE, SIZE), ["patch"]) if c.name.endswith("@top_left")]
    entries = {e["name"]: e for e in scan(net, data, library, screen_images=None, progress=False, control=control)[0]}
    clean = head_features(net, data.images)
    for candidate in library:
        moved = head_features(net, add_artifact(data.images, data.ids, candidate.artifact))
        entry = entries[candidate.name]
        assert entry["feature_displacement"] == pytest.approx(feature_displacement(clean, moved, feature_spread(clean)), rel=1e-6)
        assert entry["excess_per_displacement"] == pytest.approx(entry["excess_shift"] / entry["feature_displacement"], rel=1e-9)
    # the shortcut's own patch moves the model far for the distance it moves its features
    bright = entries["patch_8px_bright@top_left"]
    assert bright["excess_per_displacement"] > VOLUME_DISPLACEMENT_BOUND
