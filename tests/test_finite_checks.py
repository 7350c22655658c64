"""CheckFinited names the file of a non-finite image; FiniteLossCheck stops before the step."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer

from pipeline.engine.finite_checks import CheckFinited, FiniteLossCheck, NonFiniteError


def test_check_finited_names_the_file_and_passes_finite_images():
    image = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/data/scan_07.nii.gz"})
    assert CheckFinited(keys="image")({"image": image, "id": "a"})["image"] is image
    image[0, 1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"/data/scan_07.nii.gz has 1 non-finite"):
        CheckFinited(keys="image")({"image": image, "id": "a"})
    with pytest.raises(NonFiniteError, match="item id b"):  # no meta: the item's id
        CheckFinited(keys="image")({"image": torch.full((1, 2, 2), float("nan")), "id": "b"})


def test_finite_loss_check_stops_before_the_optimizer_step_naming_the_batch():
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 2)
    batches = [
        {"image": torch.randn(2, 3), "label": torch.tensor([0, 1]), "id": ["s0", "s1"]},
        {"image": torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 0.0]]), "label": torch.tensor([1, 0]),
         "id": ["s2", "s3"]},
    ]  # fmt: skip
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=torch.nn.CrossEntropyLoss(),
        decollate=False,
    )
    FiniteLossCheck().attach(trainer)
    snapshots = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: snapshots.append(network.weight.detach().clone())
    )
    with pytest.raises(NonFiniteError, match=r"epoch 1, iteration 2 \(batch sample ids: s2, s3\)"):
        trainer.run()
    assert len(snapshots) == 1  # the first step ran, the second stopped before its step
    torch.testing.assert_close(network.weight.detach(), snapshots[0], rtol=0, atol=0)
    assert torch.isfinite(network.weight).all()
