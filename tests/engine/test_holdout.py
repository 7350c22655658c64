"""The held-out split is stratified, deterministic and stable when items are added."""

from __future__ import annotations

import pytest

from pipeline.engine.holdout import split_holdout


def _items(n, offset=0):
    return [{"id": f"s{i}", "label": i % 2, "image": f"{i}.png"} for i in range(offset, offset + n)]


def test_stratified_disjoint_and_complete():
    items = _items(100)
    fit, held = split_holdout(items, 0.2, seed=3)
    assert len(held) == 20 and sum(i["label"] for i in held) == 10
    assert {i["id"] for i in fit}.isdisjoint(i["id"] for i in held)
    assert len(fit) + len(held) == len(items)


def _held(items, fraction, seed):
    return {i["id"] for i in split_holdout(items, fraction, seed=seed)[1]}


def test_same_seed_same_split_in_any_order_other_seed_other_split():
    items = _items(60)
    assert _held(items, 0.25, 1) == _held(list(reversed(items)), 0.25, 1)
    assert _held(items, 0.25, 1) != _held(items, 0.25, 2)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_interval_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        split_holdout(_items(10), fraction)


def test_too_few_items_per_label_is_refused():
    with pytest.raises(ValueError, match="label 1"):
        split_holdout([{"id": "a", "label": 0}, {"id": "b", "label": 0}, {"id": "c", "label": 1}], 0.5)
