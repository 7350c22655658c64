"""Distillation terms against values worked out by hand (plain ``math``, not the code under test).

Each case is chosen so that a plausible bug gives another number: the KL's direction swapped, a
weight or the temperature's T^2 left out, the attention exponent ignored, a batch summed
instead of averaged.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.distillation.losses import (
    AttentionTransferStageLoss,
    DistillationObjective,
    FeatureMSEStageLoss,
    ProbeKLStageLoss,
    kl_divergence,
    pair_label,
)
from pipeline.networks.probes import StageProbe, StageProbes


def _softmax(logits, t):
    exps = [math.exp(v / t) for v in logits]
    return [e / sum(exps) for e in exps]


def _kl(p, q):
    """KL(p || q) of two discrete distributions."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def _kd(student_rows, teacher_rows, t):
    """KL(teacher || student) of the softened rows, batch mean, times T^2."""
    per_row = [_kl(_softmax(tr, t), _softmax(sr, t)) for sr, tr in zip(student_rows, teacher_rows)]
    return sum(per_row) / len(per_row) * t * t


STUDENT = [[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]
TEACHER = [[5.0, 0.0, 0.0], [0.0, 0.0, 6.0]]


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_kl_is_teacher_to_student_per_sample_mean_times_t_squared(t):
    value = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), t).item()
    assert value == pytest.approx(_kd(STUDENT, TEACHER, t), rel=1e-5)
    reversed_ = sum(
        _kl(_softmax(s, t), _softmax(te, t)) for s, te in zip(STUDENT, TEACHER)
    ) / 2 * t * t
    assert abs(value - reversed_) > 0.1 * value  # the other direction is another number here


def test_kl_of_one_sample_by_hand():
    # T = 1, teacher (log 3, 0) -> (3/4, 1/4); student (0, 0) -> (1/2, 1/2)
    value = kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), 1.0).item()
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert value == pytest.approx(expected, rel=1e-6)
    # T = 2 softens both: teacher (sqrt 3, 1)/(sqrt 3 + 1), student uniform; times 4
    value = kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), 2.0).item()
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert value == pytest.approx(expected, rel=1e-6)


def _identity_probe(channels=2, classes=2, weight=None, bias=None):
    """A probe whose logits are ``weight @ channel means + bias`` (identity by default)."""
    probe = StageProbe(channels, classes, 2)
    with torch.no_grad():
        probe.linear.weight.copy_(torch.eye(classes, channels) if weight is None else torch.tensor(weight))
        probe.linear.bias.copy_(torch.zeros(classes) if bias is None else torch.tensor(bias))
    return probe


class _Probes(nn.Module):
    """Stand-in for StageProbes with hand-set probes by stage name."""

    def __init__(self, probes):
        super().__init__()
        self.by_stage = nn.ModuleDict(probes)

    def probe(self, stage):
        return self.by_stage[stage]


def _map(channel_means, size=(2, 2)):
    """(1, C, H, W) map whose channel c holds values averaging to channel_means[c]."""
    maps = []
    for mean in channel_means:
        values = torch.tensor([mean - 1.0, mean + 1.0, mean + 0.5, mean - 0.5]).reshape(size)
        maps.append(values)
    return torch.stack(maps).unsqueeze(0)


def test_probe_kl_reads_teacher_probes_and_compares_teacher_to_student():
    teacher_probes = _Probes({"t": _identity_probe(weight=[[2.0, 0.0], [0.0, -1.0]], bias=[0.5, 0.0])})
    student_probes = _Probes({"s": _identity_probe()})
    loss = ProbeKLStageLoss([["s", "t"]], student_probes, teacher_probes, temperature=3.0)
    targets = loss.teacher_targets({"t": _map([1.0, 2.0])})
    # teacher logits: (2 * 1 + 0.5, -1 * 2) = (2.5, -2)
    assert targets["t"].flatten().tolist() == pytest.approx([2.5, -2.0])
    terms = loss({"s": _map([0.0, 1.0])}, targets)
    assert set(terms) == {"s<-t"}
    assert terms["s<-t"].item() == pytest.approx(_kd([[0.0, 1.0]], [[2.5, -2.0]], 3.0), rel=1e-5)


@pytest.mark.parametrize("probe_fit", ["kl", "labels"])
def test_probe_kl_value_is_the_same_for_both_probe_fits_and_the_labels_ce_is_by_hand(probe_fit):
    student_probes = _Probes({"s": _identity_probe(weight=[[1.0, 0.0], [0.0, 3.0]])})
    loss = ProbeKLStageLoss([["s", "s"]], student_probes, _Probes({"s": _identity_probe()}), 2.0, probe_fit)
    features = torch.cat([_map([0.0, 1.0]), _map([1.0, -1.0])])  # student logits (0, 3) and (1, -3)
    targets = {"s": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    terms = loss({"s": features}, targets)
    assert terms["s"].item() == pytest.approx(_kd([[0.0, 3.0], [1.0, -3.0]], [[1.0, 0.0], [0.0, 1.0]], 2.0), rel=1e-5)
    fitted = loss.probe_fit_losses({"s": features}, torch.tensor([[1], [0]]))
    if probe_fit == "kl":
        assert fitted == {}
    else:
        # cross-entropy at T = 1: -log softmax(0, 3)[1] and -log softmax(1, -3)[0], mean
        expected = (-math.log(_softmax([0.0, 3.0], 1)[1]) - math.log(_softmax([1.0, -3.0], 1)[0])) / 2
        assert fitted["s"].item() == pytest.approx(expected, rel=1e-5)


def test_teacher_probes_are_frozen_and_stay_in_eval_mode():
    teacher_probes = StageProbes({"s": 2}, 2, 2)
    loss = ProbeKLStageLoss([["s", "s"]], StageProbes({"s": 2}, 2, 2), teacher_probes)
    loss.train()
    assert loss.training and loss.student_probes.training
    assert not teacher_probes.training
    assert not any(p.requires_grad for p in teacher_probes.parameters())
    assert all(p.requires_grad for p in loss.student_probes.parameters())
    assert loss.train(False) is loss and not loss.student_probes.training


def _adapter_loss(spatial_dims=2):
    loss = FeatureMSEStageLoss([["s", "t"]], {"s": 1}, {"t": 2}, spatial_dims)
    with torch.no_grad():
        adapter = loss.adapters[0]
        adapter.weight.copy_(torch.tensor([2.0, -1.0]).reshape(adapter.weight.shape))
        adapter.bias.copy_(torch.tensor([0.5, 0.0]))
    return loss


def test_feature_mse_maps_the_student_with_the_adapter_and_averages_squared_errors():
    loss = _adapter_loss()
    values = [1.0, 2.0, 3.0, 4.0]
    student = torch.tensor(values).reshape(1, 1, 2, 2)
    target = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)]).unsqueeze(0)
    assert loss.teacher_targets({"t": target})["t"] is target
    # adapted: channel 0 = 2v + 0.5 against 0, channel 1 = -v against 1; mean over all 8 entries
    expected = sum((2 * v + 0.5) ** 2 + (-v - 1) ** 2 for v in values) / 8
    assert loss({"s": student}, {"t": target})["s<-t"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_feature_mse_resizes_the_student_map_to_the_teacher_size(spatial_dims):
    loss = _adapter_loss(spatial_dims)
    student = torch.full((1, 1) + (1,) * spatial_dims, 3.0)  # a constant map stays constant when resized
    target = torch.ones((1, 2) + (4,) * spatial_dims)
    expected = ((2 * 3 + 0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2
    assert loss({"s": student}, {"t": target})["s<-t"].item() == pytest.approx(expected, rel=1e-6)


def test_feature_mse_names_a_stage_without_channels():
    with pytest.raises(ValueError, match="teacher stage 't'"):
        FeatureMSEStageLoss([["s", "t"]], {"s": 1}, {"x": 2})
    with pytest.raises(ValueError, match="student stage 's'"):
        FeatureMSEStageLoss([["s", "t"]], {"x": 1}, {"t": 2})


# channel 0 = (1, 2), channel 1 = (-3, 0) over two positions
FEATURE = torch.tensor([[[[1.0, 2.0]], [[-3.0, 0.0]]]])
# attention by hand: mean over channels of |f|^p at each position, then divided by its L2 norm
ATTENTION = {
    1.0: [(1 + 3) / 2, (2 + 0) / 2],
    2.0: [(1 + 9) / 2, (4 + 0) / 2],
    4.0: [(1 + 81) / 2, (16 + 0) / 2],
}


def _normalised(values):
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_attention_map_uses_the_exponent_p(p):
    attention = AttentionTransferStageLoss([["s", "s"]], p=p).attention(FEATURE)
    assert attention.shape == (1, 1, 1, 2)
    assert attention.flatten().tolist() == pytest.approx(_normalised(ATTENTION[p]), rel=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_attention_loss_is_the_squared_distance_of_the_maps_batch_mean(p):
    loss = AttentionTransferStageLoss([["s", "t"]], p=p)
    teacher = torch.cat([FEATURE, torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]])])
    student = torch.cat([torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]]]), FEATURE])
    targets = loss.teacher_targets({"t": teacher})
    uniform = [1 / math.sqrt(2)] * 2
    per_sample = [
        sum((a - b) ** 2 for a, b in zip(uniform, _normalised(ATTENTION[p]))),
        sum((a - b) ** 2 for a, b in zip(_normalised(ATTENTION[p]), [0.0, 1.0])),
    ]
    value = loss({"s": student}, targets)["s<-t"].item()
    assert value == pytest.approx(sum(per_sample) / 2, rel=1e-5)


def test_attention_resizes_the_student_and_survives_an_all_zero_map():
    loss = AttentionTransferStageLoss([["s", "t"]])
    zero = torch.zeros(1, 3, 2, 2)
    assert loss.attention(zero).abs().sum().item() == 0.0  # no division by zero
    teacher = torch.ones(1, 2, 4, 4)
    targets = loss.teacher_targets({"t": teacher})
    # a constant 1x1 student map, resized, has the teacher's (uniform) attention: zero loss
    assert loss({"s": torch.full((1, 5, 1, 1), 2.0)}, targets)["s<-t"].item() == pytest.approx(0.0, abs=1e-7)
    # the all-zero student map against a uniform teacher: distance = the teacher map's squared norm = 1
    assert loss({"s": torch.zeros(1, 5, 4, 4)}, targets)["s<-t"].item() == pytest.approx(1.0, rel=1e-6)


def test_objective_weighs_each_stage_the_logits_and_uses_its_own_temperature():
    stage = AttentionTransferStageLoss([["a", "a"], ["b", "b"]], p=2.0)
    objective = DistillationObjective(stage, stage_weights=[0.5, 3.0], logit_weight=0.25, temperature=4.0)
    teacher = {"a": FEATURE, "b": torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]])}
    student = {"a": torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]]]), "b": FEATURE}
    targets = objective.teacher_targets(teacher, torch.tensor([TEACHER[0]]))
    assert set(targets) == {"a", "b", "logits"}
    terms = objective(student, torch.tensor([STUDENT[0]]), targets)
    assert set(terms) == {"kd_a", "kd_b", "kd_logits"}
    uniform = [1 / math.sqrt(2)] * 2
    raw_a = sum((u - v) ** 2 for u, v in zip(uniform, _normalised(ATTENTION[2.0])))
    raw_b = sum((u - v) ** 2 for u, v in zip(_normalised(ATTENTION[2.0]), [0.0, 1.0]))
    assert terms["kd_a"].item() == pytest.approx(0.5 * raw_a, rel=1e-5)
    assert terms["kd_b"].item() == pytest.approx(3.0 * raw_b, rel=1e-5)
    # 0.25 * KL at T = 4 (times 16)
    assert terms["kd_logits"].item() == pytest.approx(0.25 * _kd([STUDENT[0]], [TEACHER[0]], 4.0), rel=1e-5)


@pytest.mark.parametrize("weight", [2, 2.0])
def test_one_stage_weight_applies_to_every_pair_and_a_zero_logit_weight_drops_the_term(weight):
    stage = AttentionTransferStageLoss([["a", "a"], ["b", "b"]])
    objective = DistillationObjective(stage, stage_weights=weight, logit_weight=0.0)
    assert objective.stage_weights == {"a": 2.0, "b": 2.0}
    features = {"a": FEATURE, "b": torch.ones(1, 2, 1, 2)}
    targets = objective.teacher_targets({"a": torch.ones(1, 2, 1, 2), "b": FEATURE}, torch.zeros(1, 3))
    terms = objective(features, torch.ones(1, 3), targets)
    raw = stage(features, targets)
    assert set(terms) == {"kd_a", "kd_b"}
    assert terms["kd_a"].item() == pytest.approx(2.0 * raw["a"].item(), rel=1e-6)
    assert terms["kd_b"].item() == pytest.approx(2.0 * raw["b"].item(), rel=1e-6)


def test_default_objective_weights_are_one_and_temperature_two():
    objective = DistillationObjective(AttentionTransferStageLoss([["a", "a"]]))
    assert objective.stage_weights == {"a": 1.0}
    assert objective.logit_weight == 1.0 and objective.temperature == 2.0
    targets = objective.teacher_targets({"a": FEATURE}, torch.tensor([TEACHER[0]]))
    terms = objective({"a": FEATURE}, torch.tensor([STUDENT[0]]), targets)
    assert terms["kd_a"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["kd_logits"].item() == pytest.approx(_kd([STUDENT[0]], [TEACHER[0]], 2.0), rel=1e-5)
    assert ProbeKLStageLoss([["a", "a"]], _Probes({"a": _identity_probe()}), _Probes({"a": _identity_probe()})).temperature == 2.0
    assert AttentionTransferStageLoss([["a", "a"]]).p == 2.0


def test_stage_lists_keep_order_and_drop_repeats():
    stage = AttentionTransferStageLoss([["s1", "t2"], ["s1", "t3"], ["s2", "t2"]])
    objective = DistillationObjective(stage, stage_weights=[1.0, 2.0, 3.0])
    assert objective.student_stages == ["s1", "s2"]
    assert objective.teacher_stages == ["t2", "t3"]
    assert objective.stage_weights == {"s1<-t2": 1.0, "s1<-t3": 2.0, "s2<-t2": 3.0}
    assert pair_label(("x", "x")) == "x" and pair_label(("x", "y")) == "x<-y"


@pytest.mark.parametrize(
    "pairs, match",
    [([], "at least one"), ([["a", "b", "c"]], "each entry"), ([["a"]], "each entry"), ([["a", 3]], "each entry")],
)
def test_malformed_stage_pairs_are_refused(pairs, match):
    with pytest.raises(ValueError, match=match):
        AttentionTransferStageLoss(pairs)


def test_unknown_probe_fit_is_refused():
    probes = _Probes({"a": _identity_probe()})
    with pytest.raises(ValueError, match="probe_fit"):
        ProbeKLStageLoss([["a", "a"]], probes, probes, probe_fit="teacher")


def test_kl_is_computed_in_float32_for_half_precision_logits():
    value = kl_divergence(torch.tensor(STUDENT, dtype=torch.bfloat16), torch.tensor(TEACHER, dtype=torch.bfloat16), 2.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(_kd(STUDENT, TEACHER, 2.0), rel=1e-5)  # the inputs are exact in bfloat16


def test_probes_fitted_by_the_kl_get_its_gradient():
    student_probes = _Probes({"s": _identity_probe()})
    loss = ProbeKLStageLoss([["s", "s"]], student_probes, _Probes({"s": _identity_probe()}), 2.0, "kl")
    features = _map([0.0, 1.0]).requires_grad_(True)
    value = loss({"s": features}, {"s": torch.tensor([[1.0, 0.0]])})["s"]
    grads = torch.autograd.grad(value, [features, *student_probes.parameters()])
    assert all(g.abs().sum() > 0 for g in grads)


def test_attention_of_a_small_map_is_still_unit_norm():
    small = FEATURE * 0.01  # channel means of |f|^2 far below 1: no floor on the norm may act
    attention = AttentionTransferStageLoss([["s", "s"]]).attention(small)
    assert attention.flatten().tolist() == pytest.approx(_normalised(ATTENTION[2.0]), rel=1e-5)


def test_feature_mse_resizes_bilinearly_with_pixel_centres_and_along_one_axis_only():
    loss = FeatureMSEStageLoss([["s", "t"]], {"s": 1}, {"t": 1})
    with torch.no_grad():
        loss.adapters[0].weight.fill_(1.0)
        loss.adapters[0].bias.zero_()
    # (0, 1) resized to width 4 with align_corners=False: (0, 0.25, 0.75, 1); against zeros
    student = torch.tensor([[[[0.0, 1.0]]]])
    target = torch.zeros(1, 1, 1, 4)
    expected = (0 + 0.25**2 + 0.75**2 + 1) / 4
    assert loss({"s": student}, {"t": target})["s<-t"].item() == pytest.approx(expected, rel=1e-6)
    # the height alone differs: resized too
    tall = loss({"s": torch.ones(1, 1, 2, 4)}, {"t": torch.zeros(1, 1, 4, 4)})["s<-t"]
    assert tall.item() == pytest.approx(1.0, rel=1e-6)


def test_error_messages_name_the_setting_and_what_was_given():
    with pytest.raises(ValueError, match=r"^stage_pairs: give at least one \[student_stage, teacher_stage\] pair$"):
        AttentionTransferStageLoss([])
    with pytest.raises(ValueError, match=r"^stage_pairs: each entry must be \[student_stage, teacher_stage\], got \['a'\]$"):
        AttentionTransferStageLoss([["a"]])
    probes = _Probes({"a": _identity_probe()})
    with pytest.raises(ValueError, match=r"^probe_fit must be one of \['kl', 'labels'\], got 'x'$"):
        ProbeKLStageLoss([["a", "a"]], probes, probes, probe_fit="x")
    with pytest.raises(ValueError, match=r"^stage_weights: 1 weight\(s\) \[1.0\] for 2 stage pair\(s\) \[\['a', 'a'\], \['b', 'b'\]\]$"):
        DistillationObjective(AttentionTransferStageLoss([["a", "a"], ["b", "b"]]), stage_weights=[1.0])
    with pytest.raises(ValueError, match=r"^student stage 's' has no channel count; known stages: \['x'\]$"):
        FeatureMSEStageLoss([["s", "t"]], {"x": 1}, {"t": 2})
    objective = DistillationObjective(
        ProbeKLStageLoss([["a", "a"]], probes, _Probes({"a": _identity_probe()}), probe_fit="labels")
    )
    with pytest.raises(ValueError, match=r"^student probes fitted to the labels need the batch labels$"):
        objective({"a": _map([0.0, 1.0])}, torch.zeros(1, 2), {"a": torch.zeros(1, 2), "logits": torch.zeros(1, 2)})
