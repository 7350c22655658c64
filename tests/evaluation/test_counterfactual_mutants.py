"""Counterfactual KL's details that its mutants showed untested: the keys read from the batches
(image, id, no targets), the pairing by position, each stage's index, the device given, and the
messages in full."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.evaluation.counterfactual import _paired_order, counterfactual_stage_kl
from pipeline.networks import StageProbes

LN3 = math.log(3.0)


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# P of a probe whose logits are [0, v]: (1/2, 1/2) at v = 0, (1/4, 3/4) at v = ln 3, (1/10, 9/10) at v = ln 9
HALF, QUARTER, TENTH = (0.5, 0.5), (0.25, 0.75), (0.1, 0.9)


class TwoStages(nn.Module):
    """No parameters: stage1 is the image, stage2 twice the image; logits [0, mean]."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Identity()
        self.stage2 = nn.Identity()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.device)
        first = self.stage1(x)
        self.stage2(2 * first)
        mean = first.flatten(1).mean(dim=1, keepdim=True)
        return torch.cat([torch.zeros_like(mean), mean], dim=1)


def _probes():
    """A probe per stage reading the pooled map: logits [0, pooled value]."""
    probes = StageProbes({"stage1": 1, "stage2": 1}, num_classes=2, spatial_dims=2)
    with torch.no_grad():
        for stage in ("stage1", "stage2"):
            probe = probes.probe(stage)
            probe.linear.weight.copy_(torch.tensor([[0.0], [1.0]]))
            probe.linear.bias.zero_()
    return probes


def _images(*values):
    return torch.stack([torch.full((1, 2, 2), float(v)) for v in values])


def test_kl_by_hand_pairs_by_the_id_key_given_and_needs_no_targets():
    # sample a: without 0, with ln 3; sample b: without ln 3, with 0 (the without loader reversed);
    # the batches hold neither label nor bias, and their keys are not the defaults
    with_artifact = [{"img": _images(LN3, 0.0), "name": ["a", "b"]}]
    without = [{"img": _images(LN3), "name": ["b"]}, {"img": _images(0.0), "name": ["a"]}]
    table = counterfactual_stage_kl(
        TwoStages(), _probes(), with_artifact, without, image_key="img", id_key="name"
    )
    assert list(table.columns) == ["stage", "stage_index", "metric", "value"]
    assert list(table["stage"]) == ["stage1", "stage2"]
    assert list(table["stage_index"]) == [0, 1]
    assert list(table["metric"]) == ["counterfactual_kl"] * 2
    stage1 = (_kl(HALF, QUARTER) + _kl(QUARTER, HALF)) / 2
    # stage2 doubles the map: logits 0 and ln 9
    stage2 = (_kl(HALF, TENTH) + _kl(TENTH, HALF)) / 2
    assert list(table["value"]) == pytest.approx([stage1, stage2], rel=1e-6)


def test_without_an_id_key_the_samples_pair_by_position():
    with_artifact = [{"image": _images(LN3, 0.0)}]
    without = [{"image": _images(0.0, LN3)}]
    table = counterfactual_stage_kl(TwoStages(), _probes(), with_artifact, without, id_key=None)
    # by position: (ln 3 | 0) and (0 | ln 3); the other pairing would give 0
    assert table["value"].iloc[0] == pytest.approx((_kl(HALF, QUARTER) + _kl(QUARTER, HALF)) / 2, rel=1e-6)
    # the default id key is "id": these batches have none
    with pytest.raises(ValueError, match="key 'id' is not in the batch"):
        counterfactual_stage_kl(TwoStages(), _probes(), with_artifact, without)


@pytest.mark.parametrize("sizes", [(2, 2), (1, 3), (3, 1)])  # the same positions however batched
def test_without_an_id_key_loaders_of_several_batches_pair_by_position(sizes):
    values = [LN3, 0.0, LN3, 0.0]
    with_artifact = [{"image": _images(*values[:2])}, {"image": _images(*values[2:])}]
    without = [{"image": _images(*values[: sizes[0]])}, {"image": _images(*values[sizes[0] :])}]
    table = counterfactual_stage_kl(TwoStages(), _probes(), with_artifact, without, id_key=None)
    assert list(table["value"]) == [0.0, 0.0]


def test_loaders_of_different_sizes_are_refused_naming_both():
    with pytest.raises(ValueError) as error:
        counterfactual_stage_kl(
            TwoStages(), _probes(), [{"image": _images(0.0, 1.0)}], [{"image": _images(0.0)}], id_key=None
        )
    assert str(error.value) == "loader_with has 2 samples but loader_without has 1"


@pytest.mark.parametrize(
    "probes, name", [({}, "dict"), ([_probes()], "list"), ({"stage1": nn.Linear(1, 2)}, "dict")]
)
def test_probes_of_the_wrong_type_are_refused_naming_it(probes, name):
    loader = [{"image": _images(0.0), "id": ["a"]}]
    with pytest.raises(ValueError) as error:
        counterfactual_stage_kl(TwoStages(), probes, loader, loader)
    assert str(error.value) == (
        f"stage_probes must be a StageProbes module or a non-empty mapping stage -> LinearProbe, got {name}"
    )


class OnCpu(nn.Module):
    """A stage whose output is made on the CPU from the input's shape alone."""

    def forward(self, x):
        return torch.zeros(x.shape)


class RecordsDevice(nn.Module):
    """No parameters; records the device of the images it is given."""

    def __init__(self):
        super().__init__()
        self.stage1, self.stage2 = OnCpu(), OnCpu()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.device)
        self.stage1(x)
        self.stage2(x)
        return torch.zeros(x.shape[0], 2)


def test_the_images_go_to_the_device_given():
    # without parameters the model's own device is the CPU; "meta" is a device every machine has
    model = RecordsDevice()
    loader = [{"image": _images(0.0, 1.0), "id": ["a", "b"]}]
    table = counterfactual_stage_kl(model, _probes(), loader, loader, device="meta")
    assert model.seen == [torch.device("meta")] * 2
    assert list(table["value"]) == [0.0, 0.0]
    model.seen.clear()
    counterfactual_stage_kl(model, _probes(), loader, loader)
    assert model.seen == [torch.device("cpu")] * 2


def test_messages_name_at_most_five_ids_each():
    six = [f"x{i}" for i in range(6)]
    with pytest.raises(ValueError) as error:
        _paired_order(six + six, six)
    assert str(error.value) == (
        "loader_with: sample ids must be unique to pair images, repeated: ['x0', 'x1', 'x2', 'x3', 'x4']"
    )
    others = [f"y{i}" for i in range(6)]
    with pytest.raises(ValueError) as error:
        _paired_order(six, others)
    assert str(error.value) == (
        "loader_with and loader_without must hold the same sample ids; only with: ['x0', 'x1', 'x2', 'x3', 'x4'], "
        "only without: ['y0', 'y1', 'y2', 'y3', 'y4']"
    )
