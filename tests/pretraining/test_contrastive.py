"""Contrastive pretraining library: two views, NT-Xent on MONAI's SupervisedTrainer, saved weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import RandFlipd, RandGaussianNoised, RandScaleCropd, Resized
from monai.utils import set_determinism

from pipeline.networks import build_network, load_checkpoint
from pipeline.pretraining import (
    ContrastiveModel,
    TwoViewContrastiveLoss,
    TwoViewPrepareBatch,
    save_network_weights,
    two_view_augmentation,
)


def _items(n, spatial, labels=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = [i % 2 for i in range(n)] if labels is None else labels
    return [{"image": torch.rand(1, *spatial, generator=generator), "label": label} for label in labels]


def _pretrain(items, spatial_dims, augmentations, epochs=2, batch_size=4, lr=1e-3):
    """Seeded SupervisedTrainer run; returns the network, the projection model and per-iteration losses."""
    set_determinism(seed=0)
    network = build_network("small_cnn", spatial_dims, 1, 2, channels=[4, 8])
    model = ContrastiveModel(network, projection_dim=8)
    views = two_view_augmentation(augmentations)
    loader = DataLoader(Dataset(items, transform=views), batch_size=batch_size, shuffle=True)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        loss_function=TwoViewContrastiveLoss(temperature=0.5),
        prepare_batch=TwoViewPrepareBatch(),
        decollate=False,
    )
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"].item())
    )
    trainer.run()
    set_determinism(seed=None)
    return network, model, losses


def test_two_views_are_augmented_independently_and_input_is_kept():
    item = _items(1, (16, 16))[0]
    original = item["image"].clone()
    views = two_view_augmentation([RandGaussianNoised(keys="image", prob=1.0, std=0.1)]).set_random_state(0)
    out = views(item)
    assert set(out) == {"image", "image_2", "label"}
    assert not torch.allclose(out["image"], original)
    assert not torch.allclose(out["image_2"], original)
    assert not torch.allclose(out["image"], out["image_2"])
    assert torch.equal(item["image"], original) and set(item) == {"image", "label"}


def test_flip_decisions_differ_between_the_views():
    image = torch.arange(16.0).reshape(1, 4, 4)
    views = two_view_augmentation([RandFlipd(keys="image", prob=0.5, spatial_axis=0)]).set_random_state(1)
    outcomes = [views({"image": image}) for _ in range(20)]
    differing = [not torch.equal(o["image"], o["image_2"]) for o in outcomes]
    assert any(differing) and not all(differing)  # one flip drawn per view, not one for both


def test_augmentation_on_other_keys_is_rejected():
    with pytest.raises(ValueError, match=r"augmentations\[0\].*keys='image'"):
        two_view_augmentation([RandFlipd(keys=["image", "label"], prob=0.5)])
    with pytest.raises(ValueError, match="view_key"):
        two_view_augmentation([], view_key="image")


def test_prepare_batch_concatenates_views_without_labels():
    batch = {
        "image": torch.zeros(3, 1, 8, 8),
        "image_2": torch.ones(3, 1, 8, 8),
        "label": torch.tensor([0, 1, 1]),
    }
    inputs, target = TwoViewPrepareBatch()(batch, torch.device("cpu"))
    assert target is None
    assert inputs.shape == (6, 1, 8, 8)
    assert inputs[:3].eq(0).all() and inputs[3:].eq(1).all()
    with pytest.raises(ValueError, match="image_2"):
        TwoViewPrepareBatch()({"image": batch["image"]})
    with pytest.raises(ValueError, match="same shape"):
        TwoViewPrepareBatch()({"image": batch["image"], "image_2": torch.ones(3, 1, 4, 4)})


def test_loss_is_low_for_matching_views_and_checks_shapes():
    loss = TwoViewContrastiveLoss(temperature=0.5)
    z = torch.eye(4, 8)
    matching, shuffled = loss(torch.cat([z, z])), loss(torch.cat([z, z.roll(1, 0)]))
    assert matching < shuffled
    with pytest.raises(ValueError, match="2B, D"):
        loss(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="no labels"):
        loss(torch.zeros(4, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="temperature"):
        TwoViewContrastiveLoss(temperature=0.0)


def test_model_projects_the_last_stage_and_checks_arguments():
    network = build_network("small_cnn", 2, 1, 2, channels=[4, 8])
    model = ContrastiveModel(network, projection_dim=5)
    assert model.stage == "stage2" and model.head[0].in_features == 8
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 5)
    assert ContrastiveModel(network, stage="stage1").head[0].in_features == 4
    with pytest.raises(ValueError, match="stage9.*stage1"):
        ContrastiveModel(network, stage="stage9")
    with pytest.raises(ValueError, match="build_network"):
        ContrastiveModel(torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="projection_dim"):
        ContrastiveModel(network, projection_dim=0)


def test_loss_decreases_over_a_few_steps_on_a_tiny_batch():
    items = _items(8, (16, 16))
    noise = [RandGaussianNoised(keys="image", prob=1.0, std=0.05)]
    _, _, losses = _pretrain(items, 2, noise, epochs=12, batch_size=8, lr=1e-2)
    assert losses[0] == pytest.approx(np.log(15), abs=0.05)  # untrained: 2B - 1 = 15 equally likely partners
    assert np.mean(losses[-3:]) < 0.8 * losses[0]


def test_labels_do_not_change_the_pretrained_weights_and_runs_repeat():
    augmentations = [
        RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        RandGaussianNoised(keys="image", prob=1.0),
    ]
    labels = [0, 1, 0, 1, 1, 0, 0, 1]
    first, _, _ = _pretrain(_items(8, (16, 16), labels), 2, augmentations)
    shuffled, _, _ = _pretrain(_items(8, (16, 16), labels[::-1]), 2, augmentations)
    untrained = build_network("small_cnn", 2, 1, 2, channels=[4, 8])
    for (name, a), b in zip(first.state_dict().items(), shuffled.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.stage1[0].conv.weight, untrained.stage1[0].conv.weight)


def test_saved_weights_load_strictly_into_a_fresh_network(tmp_path):
    network, model, _ = _pretrain(
        _items(8, (16, 16)), 2, [RandGaussianNoised(keys="image", prob=1.0)], epochs=1
    )
    path = save_network_weights(tmp_path / "pretrained.pt", network)
    assert set(torch.load(path, weights_only=True)) == set(network.state_dict())  # no head, no wrapper prefix
    fresh = build_network("small_cnn", 2, 1, 2, channels=[4, 8])
    assert load_checkpoint(fresh, path, strict=True).complete
    for name, value in network.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_pretraining_runs_in_3d_with_crops_resized_back():
    augmentations = [
        RandScaleCropd(keys="image", roi_scale=0.5, max_roi_scale=1.0, random_size=True),
        Resized(keys="image", spatial_size=(8, 8, 8), mode="trilinear"),
    ]
    network, model, losses = _pretrain(_items(4, (8, 8, 8)), 3, augmentations, epochs=2, batch_size=4)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert model(torch.rand(2, 1, 8, 8, 8)).shape == (2, 8)
