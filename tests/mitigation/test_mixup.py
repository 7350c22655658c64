import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from pipeline.mitigation import MixupPrepareBatch, SoftTargetCrossEntropyLoss


def _identity_batch(size):
    # sample i: channel i is 1, its own class i; mixed images then encode the mixed targets
    images = torch.eye(size)[:, :, None, None].expand(size, size, 3, 3).clone()
    return {"image": images, "label": torch.arange(size)[:, None]}


def test_images_and_targets_get_the_same_mixing():
    batch = _identity_batch(6)
    images, targets = MixupPrepareBatch(num_classes=6, alpha=1.0, seed=0)(batch)
    assert targets.shape == (6, 6)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert torch.allclose(images.mean(dim=(2, 3)), targets, atol=1e-6)
    assert not torch.equal(targets, torch.eye(6))
    assert torch.equal(batch["image"], _identity_batch(6)["image"])  # input untouched


def test_mixup_is_seeded():
    batch = _identity_batch(5)
    first = MixupPrepareBatch(5, seed=1)(batch)[1]
    assert torch.equal(first, MixupPrepareBatch(5, seed=1)(batch)[1])
    assert not torch.equal(first, MixupPrepareBatch(5, seed=2)(batch)[1])


def test_mixup_rejects_bad_input():
    with pytest.raises(ValueError, match="'label'"):
        MixupPrepareBatch(2)({"image": torch.zeros(2, 1, 2, 2)})
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        MixupPrepareBatch(2)({"image": torch.zeros(2, 1, 2, 2), "label": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="alpha"):
        MixupPrepareBatch(2, alpha=0)


def test_mixup_trains_in_a_supervised_trainer_with_uneven_last_batch():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(1, 4, 4, 4, generator=generator), "label": i % 2} for i in range(5)]
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    losses = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=2),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=SoftTargetCrossEntropyLoss(),
        prepare_batch=MixupPrepareBatch(num_classes=2, seed=0),
        decollate=False,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    assert len(losses) == 3 and all(torch.isfinite(torch.as_tensor(v)) for v in losses)
    assert trainer.state.output["label"].shape == (1, 2)
