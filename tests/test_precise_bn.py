"""PreciseBatchNorm sets running statistics to the plain average over training batches."""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer
from torch import nn

from pipeline.engine.precise_bn import PreciseBatchNorm


def _trainer(network, batches):
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
        loss_function=lambda pred, target: pred.sum() * 0.0,
    )


def test_running_stats_become_the_average_of_batch_statistics():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.Flatten(), nn.LazyLinear(2))
    batches = [
        {"image": torch.randn(8, 1, 4, 4) * (i + 1) + i, "label": torch.zeros(8, dtype=torch.long)}
        for i in range(4)
    ]
    trainer = _trainer(network, batches)
    handler = PreciseBatchNorm(network, batches, num_batches=3)
    network.eval()
    handler(trainer)
    bn = network[1]
    with torch.no_grad():
        outputs = [network[0](b["image"]) for b in batches[:3]]
    expected_mean = torch.stack([o.mean((0, 2, 3)) for o in outputs]).mean(0)
    expected_var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outputs]).mean(0)
    # float32 sums of another order: rounding scales with the data's magnitude (squared for variances)
    scale = max(float(o.abs().max()) for o in outputs)
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(bn.running_var, expected_var, rtol=1e-5, atol=1e-5 * scale**2)
    assert bn.momentum == 0.1 and not network.training  # restored


def test_frozen_batchnorm_is_left_alone_and_zero_batches_disables():
    network = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    network[1].requires_grad_(False)
    network[1].running_mean.fill_(5.0)
    batches = [{"image": torch.randn(4, 1, 4, 4), "label": torch.zeros(4, dtype=torch.long)}]
    trainer = _trainer(network, batches)
    PreciseBatchNorm(network, batches, num_batches=2)(trainer)
    assert torch.all(network[1].running_mean == 5.0)
    network[1].requires_grad_(True)
    PreciseBatchNorm(network, batches, num_batches=0)(trainer)
    assert torch.all(network[1].running_mean == 5.0)
