import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
)

from pipeline.mitigation import artifact_agnostic_augmentations, decorrelating_artifact_rates


def test_components_follow_arguments():
    default = artifact_agnostic_augmentations(2)
    assert [type(t) for t in default] == [
        RandGaussianNoised,
        RandAdjustContrastd,
        RandGaussianSmoothd,
        RandCoarseDropoutd,
    ]
    reduced = artifact_agnostic_augmentations(
        3, noise_std=None, blur_sigma=None, cutout_size=None, flip_axes=[0, 2]
    )
    assert [type(t) for t in reduced] == [RandAdjustContrastd, RandFlipd, RandFlipd]


@pytest.mark.parametrize("spatial_dims, shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_chain_runs_seeded_and_leaves_input_alone(spatial_dims, shape):
    image = torch.rand(shape)
    item = {"image": image.clone(), "label": 1}
    chain = Compose(artifact_agnostic_augmentations(spatial_dims, prob=1.0, cutout_size=4, flip_axes=[0]))
    first = chain.set_random_state(seed=7)(item)
    second = chain.set_random_state(seed=7)(item)
    assert first["image"].shape == shape
    assert torch.equal(first["image"], second["image"])
    assert not torch.allclose(first["image"], image)
    assert torch.equal(item["image"], image) and first["label"] == 1


def test_usable_from_bundle_config():
    parser = ConfigParser(
        {
            "augment": {
                "_target_": "pipeline.mitigation.artifact_agnostic_augmentations",
                "spatial_dims": 2,
                "prob": 0.2,
            }
        }
    )
    transforms = parser.get_parsed_content("augment")
    assert len(transforms) == 4 and all(t.prob == 0.2 for t in transforms)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"spatial_dims": 2, "prob": 1.5}, "prob"),
        ({"spatial_dims": 2, "contrast": (1.5, 0.7)}, "contrast"),
        ({"spatial_dims": 2, "cutout_size": (4, 4, 4)}, "cutout_size"),
        ({"spatial_dims": 2, "flip_axes": [2]}, "flip_axes"),
        ({"spatial_dims": 2, "noise_std": -0.1}, "noise_std"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        artifact_agnostic_augmentations(**kwargs)


@pytest.mark.parametrize(
    "bias_rates, target", [([0.05, 0.95], None), ([0.2, 0.7, 0.0], 0.9), ([1.0, 0.3], 1.0)]
)
def test_decorrelating_rates_equalise_artifact_presence(bias_rates, target):
    added = decorrelating_artifact_rates(bias_rates, target)
    final = max(bias_rates) if target is None else target
    assert all(0.0 <= r <= 1.0 for r in added)
    rng = np.random.default_rng(0)
    n = 200_000
    for b, r in zip(bias_rates, added):  # two independent injections, as with two seeds
        present = (rng.random(n) < b) | (rng.random(n) < r)
        assert abs(present.mean() - final) < 4 * np.sqrt(final * (1 - final) / n) + 1e-9


@pytest.mark.parametrize("bias_rates, target", [([0.05, 0.95], 0.5), ([], None), ([0.1, 1.2], None)])
def test_decorrelating_rates_reject_bad_input(bias_rates, target):
    with pytest.raises(ValueError, match="bias_rates|target"):
        decorrelating_artifact_rates(bias_rates, target)
