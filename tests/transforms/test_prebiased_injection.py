"""Pre-biased data (artifact: null): no injection, the bias flag read from the item, groups as test sets."""

import pytest
import torch

from pipeline.mitigation import datalist_groups
from pipeline.transforms import ShortcutInjectiond
from pipeline.transforms.injection import prebiased_items

INJECTION = {"keys": "image", "artifact": None, "rates": [0.05, 0.95], "seed": 0}


def _items(counts):
    """Items with ``counts[(label, bias)]`` members each, ids unique."""
    items = []
    for (label, bias), count in sorted(counts.items()):
        items += [{"id": f"{label}{bias}_{i}", "label": label, "bias": bias} for i in range(count)]
    return items


def _rate(items, label):
    members = [i for i in items if i["label"] == label]
    return sum(i["bias"] for i in members) / len(members)


def test_images_pass_through_and_the_bias_is_the_items_flag():
    image = torch.rand(1, 8, 8, 8)
    for mode, bias in (("as_trained", 1), ("as_trained", 0), ("inverted", 1), ("never", 0), ("always", 1)):
        out = ShortcutInjectiond(**INJECTION, mode=mode)(
            {"image": image, "label": 0, "id": "a", "bias": bias}
        )
        assert out["image"] is image and out["bias"] == bias


def test_a_flag_contradicting_the_mode_or_missing_is_refused():
    with pytest.raises(ValueError, match="has bias=1 in mode 'never'.*select"):
        ShortcutInjectiond(**INJECTION, mode="never")(
            {"image": torch.zeros(1, 2, 2), "label": 0, "id": "a", "bias": 1}
        )
    for mode in ("never", "always", "inverted"):
        with pytest.raises(ValueError, match="reads the bias flag from item key 'bias', absent in item 'a'"):
            ShortcutInjectiond(**INJECTION, mode=mode)({"image": torch.zeros(1, 2, 2), "label": 0, "id": "a"})
        with pytest.raises(ValueError, match="absent in item 'a'"):
            prebiased_items([{"id": "a", "label": 0}], mode)


def test_unflagged_images_as_stored_train_without_a_flag():
    """A user's own datalist without bias flags, no artifact: training (as_trained) uses every
    item as stored and writes no flag; only the bias-split modes need one."""
    image = torch.rand(1, 4, 4)
    out = ShortcutInjectiond(**INJECTION)({"image": image, "label": 1, "id": "a"})
    assert out["image"] is image and "bias" not in out
    items = [{"id": "a", "label": 0}, {"id": "b", "label": 1, "bias": 1}]
    assert ShortcutInjectiond(**INJECTION).select(items) == items
    with pytest.raises(ValueError, match="bias=2"):
        prebiased_items([{"id": "a", "label": 0, "bias": 2}], "never")


def test_modes_select_the_existing_groups():
    items = _items({(0, 0): 32, (0, 1): 8, (1, 0): 8, (1, 1): 32})
    assert ShortcutInjectiond(**INJECTION).select(items) == items
    assert {i["bias"] for i in ShortcutInjectiond(**INJECTION, mode="never").select(items)} == {0}
    assert len(ShortcutInjectiond(**INJECTION, mode="never").select(items)) == 40
    assert {i["bias"] for i in ShortcutInjectiond(**INJECTION, mode="always").select(items)} == {1}
    # with an artifact to inject, every item is used in every mode
    injecting = {**INJECTION, "artifact": {"_target_": "PatchArtifact", "size": 2}}
    assert ShortcutInjectiond(**injecting, mode="never").select(items) == items


def test_inverted_resample_swaps_the_bias_rates_without_repeats_and_is_seeded():
    items = _items({(0, 0): 32, (0, 1): 8, (1, 0): 8, (1, 1): 32})  # bias rates 0.2 (class 0), 0.8 (class 1)
    inverted = prebiased_items(items, "inverted", seed=0)
    assert _rate(inverted, 0) == pytest.approx(0.8) and _rate(inverted, 1) == pytest.approx(0.2)
    assert len(inverted) == 20 and len({i["id"] for i in inverted}) == 20  # the largest subsample, no repeats
    assert [items.index(i) for i in inverted] == sorted(items.index(i) for i in inverted)  # order kept
    assert prebiased_items(items, "inverted", seed=0) == inverted
    assert prebiased_items(items, "inverted", seed=1) != inverted
    assert ShortcutInjectiond(**INJECTION, mode="inverted").select(items) == inverted  # the injection seed


def test_inverted_resample_of_uncorrelated_data_keeps_every_item():
    items = _items({(0, 0): 10, (0, 1): 10, (1, 0): 10, (1, 1): 10})
    assert prebiased_items(items, "inverted") == items


def test_groups_of_the_mitigation_baselines_come_from_the_flags():
    items = _items({(0, 0): 2, (0, 1): 1, (1, 0): 1, (1, 1): 3})
    groups = datalist_groups(items, decide=ShortcutInjectiond(**INJECTION).decide_item)
    assert groups == [2 * i["label"] + i["bias"] for i in items]
