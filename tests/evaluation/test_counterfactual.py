"""Counterfactual KL's pieces against hand-computed values: KL(P_without || P_with) per sample, and
the pairing of the two loaders' samples by id."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.evaluation.counterfactual import _kl_per_sample, _paired_order


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kl_per_sample_is_from_the_reference_to_the_other():
    reference = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # (1/2, 1/2), (3/4, 1/4)
    other = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]])  # (9/10, 1/10), (1/2, 1/2)
    kl = _kl_per_sample(reference, other)
    assert kl.dtype == torch.float64
    assert kl.tolist() == pytest.approx(
        [_kl((0.5, 0.5), (0.9, 0.1)), _kl((0.75, 0.25), (0.5, 0.5))], rel=1e-6
    )
    assert _kl((0.5, 0.5), (0.9, 0.1)) != pytest.approx(_kl((0.9, 0.1), (0.5, 0.5)), rel=1e-3)
    assert _kl_per_sample(reference, reference).tolist() == [0.0, 0.0]


def test_pairs_are_found_by_id_in_any_order():
    assert _paired_order(["b", "c", "a"], ["a", "b", "c"]) == [1, 2, 0]
    assert _paired_order(["a"], ["a"]) == [0]


@pytest.mark.parametrize(
    "with_ids, without_ids, message",
    [
        (["a", "a", "b"], ["a", "b"], "loader_with: sample ids must be unique to pair images, repeated: ['a']"),
        (["a", "b"], ["b", "b", "a", "a"], "loader_without: sample ids must be unique to pair images, repeated: ['a', 'b']"),
        (["a", "b"], ["a", "c"],
         "loader_with and loader_without must hold the same sample ids; only with: ['b'], only without: ['c']"),
    ],
)  # fmt: skip
def test_unpairable_ids_are_refused_naming_them(with_ids, without_ids, message):
    with pytest.raises(ValueError) as error:
        _paired_order(with_ids, without_ids)
    assert str(error.value) == message
