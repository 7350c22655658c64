"""Label-conditioned injection: stable per-sample decisions, achieved rates, seeded artifacts."""

import numpy as np
import pytest
import torch
from artifact_cases import smooth_image
from monai.data import DataLoader, Dataset

import pipeline.transforms as T

RATES = [0.1, 0.8]
NOISE = {"_target_": "GaussianNoiseArtifact", "std": 0.5}


def decisions(injection, label, n=2000, offset=0):
    return np.array([injection.decide(label, f"case-{offset + i}") for i in range(n)])


@pytest.mark.parametrize(
    "mode, expected", [("as_trained", RATES), ("never", [0, 0]), ("always", [1, 1]), ("inverted", RATES[::-1])]
)
def test_achieved_rates_within_binomial_tolerance(mode, expected):
    injection = T.ShortcutInjection(NOISE, rates=RATES, mode=mode, seed=11)
    n = 2000
    for label, p in enumerate(expected):
        hits = decisions(injection, label, n, offset=label * n).sum()
        assert abs(hits - n * p) <= 4 * np.sqrt(n * p * (1 - p)), (mode, label, hits)


def test_inverted_swaps_the_decisions_of_the_same_samples():
    trained = T.ShortcutInjection(NOISE, rates=[0.3, 0.6], seed=2)
    inverted = T.ShortcutInjection(NOISE, rates=[0.3, 0.6], seed=2, mode="inverted")
    np.testing.assert_array_equal(decisions(trained, 0, 300), decisions(inverted, 1, 300))
    np.testing.assert_array_equal(decisions(trained, 1, 300), decisions(inverted, 0, 300))


def test_same_seed_same_decisions_and_images_other_seed_differs():
    img = smooth_image(2)
    a, b = (T.ShortcutInjection(NOISE, rates=[0.5, 0.5], seed=4) for _ in range(2))
    c = T.ShortcutInjection(NOISE, rates=[0.5, 0.5], seed=5)
    np.testing.assert_array_equal(decisions(a, 1, 200), decisions(b, 1, 200))
    assert (decisions(a, 1, 200) != decisions(c, 1, 200)).any()
    out_a, bias_a = a(img, 1, "case-3")
    out_b, bias_b = b(img, 1, "case-3")
    assert bias_a == bias_b
    np.testing.assert_array_equal(out_a, out_b)
    forced = [T.ShortcutInjection(NOISE, mode="always", seed=s)(img, 0, "x")[0] for s in (4, 5)]
    assert not np.array_equal(*forced)


def test_decision_ignores_call_order_and_label_and_id_forms():
    injection = T.ShortcutInjection(NOISE, rates={0: 0.5, "1": 0.5}, seed=3)
    forward = decisions(injection, 1, 100)
    backward = [injection.decide(1, f"case-{i}") for i in reversed(range(100))][::-1]
    np.testing.assert_array_equal(forward, backward)
    for label in (1, np.int64(1), 1.0, torch.tensor(1), torch.tensor([1]), np.array([[1]])):
        assert [injection.decide(label, i) for i in range(50)] == [injection.decide(1, i) for i in range(50)]
    assert [injection.decide(1, i) for i in range(50)] == [injection.decide(1, str(i)) for i in range(50)]
    assert [injection.decide(1, np.int32(i)) for i in range(50)] == [injection.decide(1, i) for i in range(50)]


def test_artifact_is_seeded_per_sample_unless_disabled():
    img = smooth_image(2)
    injection = T.ShortcutInjection(NOISE, mode="always", seed=0)
    first = injection(img, 0, "a")[0]
    injection(img, 0, "b")
    np.testing.assert_array_equal(injection(img, 1, "a")[0], first)  # same id: same noise, any order
    assert not np.array_equal(injection(img, 0, "b")[0], first)
    unseeded = T.ShortcutInjection(NOISE, mode="always", seed=0, per_sample_artifact_seed=False)
    assert not np.array_equal(unseeded(img, 0, "a")[0], unseeded(img, 0, "a")[0])
    again = T.ShortcutInjection(NOISE, mode="always", seed=0, per_sample_artifact_seed=False)
    np.testing.assert_array_equal(again(img, 0, "a")[0], T.ShortcutInjection(
        NOISE, mode="always", seed=0, per_sample_artifact_seed=False)(img, 0, "a")[0])


def test_counterfactual_pairs_and_never_mode():
    img = smooth_image(3)
    item = {"image": img, "label": 0, "id": 17}
    never = T.ShortcutInjectiond(keys="image", artifact=NOISE, mode="never", seed=9)(item)
    always = T.ShortcutInjectiond(keys="image", artifact=NOISE, mode="always", seed=9)(item)
    trained = T.ShortcutInjectiond(keys="image", artifact=NOISE, rates=[1.0, 0.0], seed=9)(item)
    assert (never["bias"], always["bias"], trained["bias"]) == (0, 1, 1)
    assert never["image"] is img
    np.testing.assert_array_equal(always["image"], trained["image"])  # same noise in every mode
    assert not np.array_equal(always["image"], img)
    assert item == {"image": img, "label": 0, "id": 17}  # input item untouched


def test_dictionary_twin_matches_array_version_and_treats_keys_alike():
    img = smooth_image(2)
    artifact = T.PatchArtifact(size=5, position="random")
    array_version = T.ShortcutInjection(artifact, rates=[0.5, 0.5], seed=1)
    dict_version = T.ShortcutInjectiond(
        keys=["image", "twin", "absent"], artifact=artifact, rates=[0.5, 0.5], seed=1, label_key="y",
        id_key="name", bias_key="has_patch", allow_missing_keys=True,
    )
    for i in range(20):
        out = dict_version({"image": img, "twin": img.copy(), "y": i % 2, "name": f"s{i}"})
        expected, bias = array_version(img, i % 2, f"s{i}")
        assert out["has_patch"] == bias
        np.testing.assert_array_equal(out["image"], expected)
        np.testing.assert_array_equal(out["twin"], expected)
    assert artifact._draw_state is None, "the caller's artifact was used instead of a copy"


def test_dict_config_equals_instance():
    img = smooth_image(2)
    from_config = T.ShortcutInjection({"_target_": "pipeline.transforms.RulerArtifact", "period": 3}, mode="always")
    from_instance = T.ShortcutInjection(T.RulerArtifact(period=3), mode="always")
    np.testing.assert_array_equal(from_config(img, 0, 1)[0], from_instance(img, 0, 1)[0])


def test_decisions_and_images_hold_across_dataloader_workers():
    items = [{"image": smooth_image(2, seed=i)[:, :8, :8], "label": i % 2, "id": f"w{i}"} for i in range(16)]
    inject = T.ShortcutInjectiond(keys="image", artifact=NOISE, rates=[0.3, 0.7], seed=21)
    expected = {item["id"]: inject(item) for item in items}
    loader = DataLoader(Dataset(items, transform=inject), batch_size=4, num_workers=2, shuffle=True)
    for _ in range(2):  # two epochs
        seen = 0
        for batch in loader:
            for k, sample_id in enumerate(batch["id"]):
                assert int(batch["bias"][k]) == expected[sample_id]["bias"]
                np.testing.assert_array_equal(np.asarray(batch["image"][k]), np.asarray(expected[sample_id]["image"]))
                seen += 1
        assert seen == len(items)
    assert 0 < sum(e["bias"] for e in expected.values()) < len(items)


@pytest.mark.parametrize("mode", ["as_trained", "always", "inverted"])
def test_clean_items_pass_unchanged_with_flag_zero(mode):
    injection = T.ShortcutInjectiond("image", NOISE, rates=[1.0, 1.0], mode=mode, seed=3)
    image = smooth_image(2)
    injected = injection({"image": image, "label": 1, "id": "a"})
    clean = injection({"image": image, "label": 1, "id": "a", "clean": True})
    assert injected["bias"] == 1 and not np.allclose(np.asarray(injected["image"]), np.asarray(image))
    assert clean["bias"] == 0 and clean["image"] is image and "clean" not in clean
    assert injection.decide_item({"label": 0, "id": "b", "clean": True}) == 0
    assert injection({"image": image, "label": 1, "id": "a", "clean": False})["bias"] == 1


def test_clean_prebiased_item_flagged_one_is_refused():
    injection = T.ShortcutInjectiond("image", None, mode="as_trained")
    assert injection.decide_item({"label": 1, "id": "a", "bias": 0, "clean": True}) == 0
    with pytest.raises(ValueError, match="'a' is marked 'clean'.*bias=1"):
        injection.decide_item({"label": 1, "id": "a", "bias": 1, "clean": True})
