"""Folding BatchNorm into convolutions keeps the teacher's outputs and stage features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.distillation.inference_teacher import channels_last, folded_copy, frozen_script
from pipeline.networks import build_network, network_stages
from pipeline.networks.hooks import FeatureHooks


def _assert_close(actual, expected, rtol):
    """Elementwise ``rtol``, with the absolute bound ``rtol`` times the largest magnitude of ``expected``.

    float32 convolutions summed in another order (BatchNorm folded, channels-last, traced; other
    CPUs and thread counts) differ by about 1e-6 of the features' largest magnitude (measured:
    up to 1.7e-6 for resnet18's stages, whose features reach 4.6-11), also on elements near 0.
    """
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))


def _with_random_statistics(network):
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
    return network.eval()


@pytest.mark.parametrize("name,dims,size", [("small_cnn", 2, 32), ("simba_cnn", 3, 16), ("resnet18", 2, 32)])
def test_outputs_and_stage_features_are_unchanged(name, dims, size):
    torch.manual_seed(0)
    network = _with_random_statistics(build_network(name, dims))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    folded = folded_copy(network)
    stages = list(network_stages(name, dims))
    images = torch.rand(2, 1, *(size,) * dims)
    with torch.no_grad(), FeatureHooks(network, stages) as a, FeatureHooks(folded, stages) as b:
        _assert_close(folded(images), network(images), rtol=1e-4)
        for stage in stages:
            _assert_close(b.features[stage], a.features[stage], rtol=1e-4)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())  # input untouched


def test_small_cnn_batchnorms_are_folded_and_the_copy_is_frozen():
    folded = folded_copy(build_network("small_cnn"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())


def test_norm_after_activation_is_not_folded():
    sequence = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    folded = folded_copy(sequence)
    assert isinstance(folded[2], nn.BatchNorm2d)


@pytest.mark.parametrize("name,dims,size", [("small_cnn", 2, 32), ("simba_cnn", 3, 16)])
def test_frozen_script_gives_the_eager_outputs_at_another_batch_size(name, dims, size):
    torch.manual_seed(0)
    network = _with_random_statistics(build_network(name, dims))
    stages = list(network_stages(name, dims))
    folded = folded_copy(network)
    script = frozen_script(folded, stages, channels_last(torch.rand(4, 1, *(size,) * dims)))
    assert isinstance(script, torch.jit.ScriptModule)  # traced, not the eager fallback (None)
    images = torch.rand(3, 1, *(size,) * dims)
    with torch.no_grad(), FeatureHooks(network, stages) as hooks:
        logits, features = script(channels_last(images))
        _assert_close(logits, network(images), rtol=1e-4)
        for stage, feature in zip(stages, features):
            _assert_close(feature, hooks.features[stage], rtol=1e-4)


def test_frozen_script_falls_back_to_eager_when_tracing_fails(monkeypatch, caplog):
    def untraceable(*args, **kwargs):
        raise RuntimeError("cannot trace this network")

    monkeypatch.setattr(torch.jit, "trace", untraceable)
    folded = folded_copy(build_network("small_cnn"))
    with caplog.at_level("WARNING"):
        assert frozen_script(folded, ["stage1"], torch.rand(2, 1, 32, 32)) is None
    assert "cannot trace this network" in caplog.text
