"""The injection's details that its mutants showed untested: the exact hash of every decision and
artifact seed (recorded results depend on them), the ids, labels and flags given as tensors, the
pre-biased resample's edge cases, the multi-key draw without per-sample seeds, defaults, and the
messages in full."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from monai.transforms import Randomizable
from monai.utils import MAX_SEED

import pipeline.transforms as T
from pipeline.transforms.injection import (
    _bias_flag,
    _check_rates,
    _class_index,
    _sample_key,
    build_artifact,
    prebiased_items,
)

NOISE = {"_target_": "GaussianNoiseArtifact", "std": 0.5}


def _sha_uniform(*parts) -> int:
    """The documented hash: the first 8 bytes of SHA-256 of the parts joined by ':', big-endian."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _items(counts):
    return [
        {"id": f"{label}{bias}_{i}", "label": label, "bias": bias}
        for (label, bias), count in sorted(counts.items())
        for i in range(count)
    ]


class SeedRecorder(Randomizable):
    """A Randomizable array transform that records the seeds it is given and adds nothing."""

    def __init__(self):
        self.seeds = []

    def set_random_state(self, seed=None, state=None):
        self.seeds.append(seed)
        return super().set_random_state(seed, state)

    def randomize(self, data=None):
        pass

    def __call__(self, img):
        return img


# ----------------------------------------------------------------------------- stable decisions


def test_decisions_are_the_recorded_hash_of_seed_and_id():
    """Datasets built with earlier versions must get the same biased samples: pinned bits."""
    for seed, bits in ((0, "10010110011001000010000100011110"), (7, "01100010111111001001010110001010")):
        injection = T.ShortcutInjection(NOISE, rates=[0.5, 0.5], seed=seed)
        assert "".join(str(injection.decide(0, f"case-{i}")) for i in range(32)) == bits
        assert [injection.decide(0, f"case-{i}") for i in range(32)] == [
            int(_sha_uniform(seed, "decision", f"case-{i}") / 2**64 < 0.5) for i in range(32)
        ]
    default = T.ShortcutInjection(NOISE, rates=[0.5, 0.5])  # seed 0 by default
    assert (
        "".join(str(default.decide(1, f"case-{i}")) for i in range(32)) == "10010110011001000010000100011110"
    )


def test_a_draw_equal_to_the_rate_is_not_biased():
    draw = _sha_uniform(3, "decision", "k") / 2**64
    assert T.ShortcutInjection(NOISE, rates=[draw, draw], seed=3).decide(0, "k") == 0
    assert T.ShortcutInjection(NOISE, rates=[np.nextafter(draw, 1.0)] * 2, seed=3).decide(0, "k") == 1


def test_the_artifact_is_seeded_with_the_hash_of_seed_and_id():
    recorder = SeedRecorder()
    injection = T.ShortcutInjection(recorder, mode="always", seed=5)
    injection(torch.zeros(1, 2, 2), 0, "a")
    injection(torch.zeros(1, 2, 2), 1, 17)
    assert injection.artifact.seeds == [
        _sha_uniform(5, "artifact", "a") % MAX_SEED,
        _sha_uniform(5, "artifact", "17") % MAX_SEED,
    ]
    assert recorder.seeds == []  # the caller's transform is copied, never used
    once = T.ShortcutInjection(recorder, mode="always", seed=MAX_SEED + 3, per_sample_artifact_seed=False)
    once(torch.zeros(1, 2, 2), 0, "a")
    assert once.artifact.seeds == [3]  # seeded once, at construction, with seed % MAX_SEED


def test_the_artifact_is_a_deep_copy():
    class Appends:
        def __init__(self):
            self.calls = []

        def __call__(self, img):
            self.calls.append(1)
            return img + 1

    caller = Appends()
    injection = T.ShortcutInjection(caller, mode="always")
    assert injection(torch.zeros(1, 2, 2), 0, "a")[0].sum() == 4
    assert caller.calls == [] and injection.artifact.calls == [1]


# ----------------------------------------------------------------------------- ids, labels, flags


@pytest.mark.parametrize(
    "sample_id", [torch.tensor(5), torch.tensor([5]), np.array([[5]]), np.int16(5), 5, "5"]
)
def test_sample_ids_of_one_element_are_their_value(sample_id):
    assert _sample_key(sample_id) == "5"


@pytest.mark.parametrize(
    "sample_id, message",
    [
        (1.5, "sample id must be a str or an int, got 1.5 (float)."),
        (True, "sample id must be a str or an int, got True (bool)."),
        (None, "sample id must be a str or an int, got None (NoneType)."),
    ],
)
def test_other_sample_ids_are_refused_naming_their_type(sample_id, message):
    with pytest.raises(ValueError) as error:
        _sample_key(sample_id)
    assert str(error.value) == message


def test_a_tensor_of_several_ids_is_refused():
    with pytest.raises(ValueError) as error:
        _sample_key(torch.tensor([1, 2]))
    assert str(error.value).startswith("sample id must be a str or an int, got tensor([1, 2])")


@pytest.mark.parametrize(
    "label, message",
    [
        (torch.tensor([0, 1]), "label must be a class index (one element), got shape (2,)."),
        ("1", "label must be an integer class index, got '1'."),
        (True, "label must be an integer class index, got True."),
        (0.5, "label must be an integer class index, got 0.5."),
        (2, "label=2 has no rate: rates cover classes 0..1."),
        (-1, "label=-1 has no rate: rates cover classes 0..1."),
    ],
)
def test_labels_that_are_not_a_covered_class_are_refused(label, message):
    with pytest.raises(ValueError) as error:
        _class_index(label, 2)
    assert str(error.value) == message


@pytest.mark.parametrize("flag", [torch.tensor(1), torch.tensor([1]), np.array([1.0]), 1])
def test_bias_flags_of_one_element_are_read(flag):
    assert _bias_flag({"id": "a", "bias": flag}, "bias") == 1
    assert _bias_flag({"id": "a", "bias": flag - 1}, "bias") == 0


@pytest.mark.parametrize(
    "item, message",
    [
        ({"id": "a", "bias": torch.tensor(2)}, "item 'a' has bias=2; a bias flag is 0 or 1."),
        ({"bias": 2}, "item '?' has bias=2; a bias flag is 0 or 1."),
        ({"id": "a", "bias": True}, "item 'a' has bias=True; a bias flag is 0 or 1."),
    ],
)
def test_bad_bias_flags_are_refused_naming_the_item(item, message):
    with pytest.raises(ValueError) as error:
        _bias_flag(item, "bias")
    assert str(error.value) == message


def test_a_missing_flag_message_in_full():
    with pytest.raises(ValueError) as error:
        _bias_flag({"label": 0, "image": 1}, "flag")
    assert str(error.value) == (
        "pre-biased data (artifact: null) reads the bias flag from item key 'flag', absent in item '?' "
        "(keys: ['image', 'label']): the bias-free and bias-inverted sets need a 0/1 flag per item; write it "
        "with data_prep (e.g. `python -m data_prep simba`, or `data_prep table` with a `bias` column), or "
        "configure an artifact to inject (--artifact SPEC)."
    )


# ----------------------------------------------------------------------------- rates, settings


@pytest.mark.parametrize(
    "rates, message",
    [
        ({"a": 0.5}, "rates keys must be class indices 0..n-1, got ['a']."),
        ({0: 0.5, 2: 0.5}, "rates keys must be the classes 0..n-1, got [0, 2]."),
        ("0.5", "rates must be a list of probabilities per class or a dict {class: rate}, got '0.5'."),
        (0.5, "rates must be a list of probabilities per class or a dict {class: rate}, got 0.5."),
        ([], "rates must give a probability for at least one class, got none."),
        ([0.5, 1.5], "rates must be a finite number in [0.0, 1.0], got 1.5."),
        ([0.5, -0.1], "rates must be a finite number in [0.0, 1.0], got -0.1."),
    ],
)
def test_bad_rates_are_refused_in_full(rates, message):
    with pytest.raises(ValueError) as error:
        _check_rates(rates)
    assert str(error.value) == message


def test_rates_may_cover_three_classes_when_not_inverted():
    injection = T.ShortcutInjection(NOISE, rates=[0.0, 0.0, 1.0])
    assert [injection.decide(label, "a") for label in (0, 1, 2)] == [0, 0, 1]
    assert _check_rates([1, 0.25]) == (1.0, 0.25)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "sometimes"}, "mode='sometimes' is unknown; use one of ['as_trained', 'never', 'always', 'inverted']."),
        ({"mode": "inverted", "rates": [0.1, 0.2, 0.3]},
         "mode='inverted' swaps the rates of two classes, but rates=[0.1, 0.2, 0.3]."),
        ({"seed": 1.5}, "seed must be an integer, got 1.5."),
        ({"seed": "1"}, "seed must be an integer, got '1'."),
        ({"seed": True}, "seed must be an integer, got True."),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_in_full(options, message):
    for make in (
        lambda: T.ShortcutInjection(NOISE, **options),
        lambda: T.ShortcutInjectiond(keys="image", artifact=NOISE, **options),
    ):
        with pytest.raises(ValueError) as error:
            make()
        assert str(error.value) == message


def test_the_dictionary_twin_refuses_an_unknown_mode_for_pre_biased_data_too():
    with pytest.raises(ValueError) as error:
        T.ShortcutInjectiond(keys="image", artifact=None, mode="sometimes")
    assert str(error.value) == (
        "mode='sometimes' is unknown; use one of ['as_trained', 'never', 'always', 'inverted']."
    )
    with pytest.raises(ValueError) as error:
        prebiased_items([], "sometimes")
    assert str(error.value) == (
        "mode='sometimes' is unknown; use one of ['as_trained', 'never', 'always', 'inverted']."
    )


@pytest.mark.parametrize(
    "artifact, message",
    [
        ({"size": 4}, "artifact config needs a '_target_' class name, got {'size': 4}."),
        ({"_target_": 3}, "artifact config needs a '_target_' class name, got {'_target_': 3}."),
        ({"_target_": "NoSuchArtifact"},
         "artifact '_target_'='NoSuchArtifact' is not a class in pipeline.transforms nor an importable path."),
        ({"_target_": "no.such.Artifact"},
         "artifact '_target_'='no.such.Artifact' is not a class in pipeline.transforms nor an importable path."),
        (5, "artifact must be an artifact instance or a dict config, got 5."),
    ],
)  # fmt: skip
def test_bad_artifacts_are_refused_in_full(artifact, message):
    with pytest.raises(ValueError) as error:
        build_artifact(artifact)
    assert str(error.value) == message


# ----------------------------------------------------------------------------- the dictionary twin


def test_without_per_sample_seeds_every_key_gets_the_same_draw_and_each_item_a_new_one():
    inject = T.ShortcutInjectiond(
        keys=["image", "twin"], artifact=NOISE, mode="always", per_sample_artifact_seed=False
    )
    image = torch.zeros(1, 4, 4)
    first = inject({"image": image, "twin": image.clone(), "label": 0, "id": "a"})
    second = inject({"image": image, "twin": image.clone(), "label": 0, "id": "a"})
    assert torch.equal(first["image"], first["twin"]) and torch.equal(second["image"], second["twin"])
    assert not torch.equal(first["image"], second["image"])  # unseeded: the same id draws anew
    assert not torch.equal(first["image"], image)


def test_the_dictionary_twin_seeds_0_by_default():
    image = torch.zeros(1, 4, 4)
    items = [{"image": image, "label": 1, "id": f"case-{i}"} for i in range(32)]
    default = T.ShortcutInjectiond(keys="image", artifact=NOISE, rates=[0.5, 0.5])
    assert "".join(str(default(item)["bias"]) for item in items) == "10010110011001000010000100011110"
    always = T.ShortcutInjectiond(keys="image", artifact=NOISE, mode="always")
    seeded = T.ShortcutInjection(NOISE, mode="always", seed=0)
    assert torch.equal(always(items[0])["image"], seeded(image, 1, "case-0")[0])


def test_a_missing_image_key_is_an_error_unless_allowed():
    inject = T.ShortcutInjectiond(keys=["image", "mask"], artifact=NOISE, mode="always")
    with pytest.raises(KeyError):
        inject({"image": torch.zeros(1, 2, 2), "label": 0, "id": "a"})


@pytest.mark.parametrize(
    "item, message",
    [
        ({"image": 0, "id": "a"}, "label_key='y' is not in the item; available keys: ['id', 'image']."),
        (
            {"image": 0, "y": 1, 3: "x"},
            "id_key='name' is not in the item; available keys: ['3', 'image', 'y'].",
        ),
    ],
)
def test_a_missing_label_or_id_key_is_named(item, message):
    inject = T.ShortcutInjectiond(keys="image", artifact=NOISE, label_key="y", id_key="name")
    with pytest.raises(ValueError) as error:
        inject(item)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "mode, item, message",
    [
        ("always", {"name": "a", "flag": 0},
         "pre-biased item 'a' has flag=0 in mode 'always': nothing is injected or removed, so pass the items "
         "through ShortcutInjectiond.select() first."),
        ("never", {"flag": 1},
         "pre-biased item '?' has flag=1 in mode 'never': nothing is injected or removed, so pass the items "
         "through ShortcutInjectiond.select() first."),
    ],
)  # fmt: skip
def test_a_pre_biased_flag_against_the_mode_is_refused_in_full(mode, item, message):
    inject = T.ShortcutInjectiond(keys="image", artifact=None, mode=mode, id_key="name", bias_key="flag")
    with pytest.raises(ValueError) as error:
        inject({"image": 0, **item})
    assert str(error.value) == message


# ----------------------------------------------------------------------------- the pre-biased resample


def test_select_reads_the_flag_from_the_bias_key_given():
    items = [{"id": "a", "label": 0, "flag": 1}, {"id": "b", "label": 0, "flag": 0}]
    inject = T.ShortcutInjectiond(keys="image", artifact=None, mode="always", bias_key="flag")
    assert inject.select(items) == items[:1]


def test_the_inverted_resample_is_the_recorded_draw_of_its_seed():
    items = _items({(0, 0): 12, (0, 1): 6, (1, 0): 6, (1, 1): 12})
    # class 0 gets 6 biased + 3 of its 12 unbiased (rate 2/3), class 1 all 6 unbiased + 3 of its 12 biased
    for seed, drawn in ((0, ["00_1", "00_4", "00_7", "11_1", "11_2", "11_3"]),
                        (2, ["00_0", "00_6", "00_9", "11_2", "11_3", "11_8"])):  # fmt: skip
        chosen = prebiased_items(items, "inverted", seed=seed)
        assert [i["id"] for i in chosen if i["bias"] == i["label"]] == drawn
        assert len(chosen) == 18
    assert prebiased_items(items, "inverted") == prebiased_items(items, "inverted", seed=0)
    assert T.ShortcutInjectiond(keys="image", artifact=None, mode="inverted").select(
        items
    ) == prebiased_items(items, "inverted", seed=0)


def test_the_inverted_resample_of_a_class_without_or_with_only_biased_items():
    # class 0 never biased (rate 0), class 1 half: class 1 keeps its unbiased items only, class 0 none
    items = _items({(0, 0): 4, (1, 0): 2, (1, 1): 2})
    assert [i["id"] for i in prebiased_items(items, "inverted")] == ["10_0", "10_1"]
    # class 0 always biased (rate 1): class 1 keeps its biased items only
    items = _items({(0, 1): 4, (1, 0): 2, (1, 1): 2})
    assert [i["id"] for i in prebiased_items(items, "inverted")] == ["11_0", "11_1"]


def test_the_inverted_resample_takes_as_many_unbiased_items_as_the_rate_allows():
    # class 0: 1 biased, 9 not (rate 0.1); class 1: 1 biased, 3 not (rate 0.25)
    # class 0 at 0.25: 4 items (1 + 3 unbiased); class 1 at 0.1: 3 items (0 + 3 unbiased)
    chosen = prebiased_items(_items({(0, 0): 9, (0, 1): 1, (1, 0): 3, (1, 1): 1}), "inverted")
    counts = {(label, bias): sum(1 for i in chosen if (i["label"], i["bias"]) == (label, bias))
              for label in (0, 1) for bias in (0, 1)}  # fmt: skip
    assert counts == {(0, 0): 3, (0, 1): 1, (1, 0): 3, (1, 1): 0}


def test_a_class_of_one_item_has_its_own_rate():
    # class 1 is one biased item (rate 1): class 0 (rate 1/2) keeps its two biased items only
    items = _items({(0, 0): 2, (0, 1): 2, (1, 1): 1})
    assert [i["id"] for i in prebiased_items(items, "inverted")] == ["01_0", "01_1"]


def test_the_inverted_resample_needs_labels_0_and_1():
    with pytest.raises(ValueError) as error:
        prebiased_items([{"id": "a", "label": 2, "bias": 0}], "inverted")
    assert str(error.value) == "label=2 has no rate: rates cover classes 0..1."
