"""The fit check: training losses of a seeded short run, falling where the task is learnable."""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmarks import fit_check


def _toy():
    """64 random images labelled by one pixel: learnable by the toy network."""
    torch.manual_seed(1)
    x = torch.rand(64, 1, 8, 8)
    return x, (x[:, 0, 0, 0] > 0.5).long()


def _make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


def test_losses_are_seeded_and_fall_on_a_learnable_task_only():
    x, y = _toy()
    first = fit_check.losses(_make, 1e-2, x, y, steps=60, batch=16)
    assert first == fit_check.losses(_make, 1e-2, x, y, steps=60, batch=16)
    assert len(first) == 60
    assert sum(first[-10:]) / 10 < 0.5 * sum(first[:10]) / 10
    frozen = fit_check.losses(_make, 0.0, x, y, steps=20, batch=16)
    assert abs(sum(frozen) / 20 - math.log(2)) < 0.1  # no learning: about ln 2
