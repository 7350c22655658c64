"""Layer probes: pooled linear heads on stage features, sized from the registry."""

import pytest
import torch

from pipeline.networks import StageProbe, StageProbes, build_network, network_stages
from pipeline.networks.hooks import FeatureHooks


@pytest.mark.parametrize("dims,spatial", [(2, (7, 5)), (3, (4, 3, 2))])
@pytest.mark.parametrize("adapter", [None, 6])
def test_stage_probe_shapes(dims, spatial, adapter):
    torch.manual_seed(0)
    probe = StageProbe(in_channels=10, num_classes=3, spatial_dims=dims, adapter_channels=adapter)
    logits = probe(torch.randn(4, 10, *spatial))
    assert logits.shape == (4, 3)
    assert probe.linear.in_features == (adapter or 10)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.parameters())  # every part learns


def test_probe_is_pooled_linear_without_adapter():
    probe = StageProbe(3, 2, 2)
    features = torch.randn(2, 3, 4, 4)
    expected = features.mean(dim=(2, 3)) @ probe.linear.weight.T + probe.linear.bias
    torch.testing.assert_close(probe(features), expected)


def test_channel_mismatch_names_stage_and_channels():
    probes = StageProbes({"layer2": 128}, num_classes=2, spatial_dims=2)
    with pytest.raises(ValueError, match=r"stage 'layer2': expected 128 channels, got 64"):
        probes({"layer2": torch.randn(2, 64, 4, 4)})
    with pytest.raises(ValueError, match=r"expected a 4D feature map .* got shape \(2, 128, 4, 4, 4\)"):
        probes({"layer2": torch.randn(2, 128, 4, 4, 4)})


def test_missing_stage_is_reported():
    probes = StageProbes({"stage1": 4, "stage2": 8})
    with pytest.raises(ValueError, match=r"lack probed stage\(s\) \['stage2'\]"):
        probes({"stage1": torch.randn(1, 4, 2, 2)})


def test_dotted_names_kept_outside_and_mapped_inside():
    probes = StageProbes.from_network(
        "densenet121", ["features.denseblock2", "features.denseblock4"], spatial_dims=3
    )
    assert probes.stage_names == ("features.denseblock2", "features.denseblock4")
    assert (
        probes.probe("features.denseblock2").in_channels
        == network_stages("densenet121")["features.denseblock2"]
    )
    assert any(k.startswith("probes.features-denseblock4.") for k in probes.state_dict())
    out = probes(
        {
            "features.denseblock2": torch.randn(2, 512, 2, 2, 2),
            "features.denseblock4": torch.randn(2, 1024, 1, 1, 1),
        }
    )
    assert list(out) == ["features.denseblock2", "features.denseblock4"]
    assert all(v.shape == (2, 2) for v in out.values())


@pytest.mark.parametrize("dims", [2, 3])
def test_probes_sized_from_registry_fit_captured_features(dims):
    options = dict(channels=[4, 8, 12, 16])
    torch.manual_seed(0)
    model = build_network("small_cnn", dims, 1, 3, **options)
    probes = StageProbes.from_network("small_cnn", None, dims, 1, 3, adapter_channels=5, **options)
    assert probes.stage_names == ("stage1", "stage2", "stage3", "stage4")
    with FeatureHooks(model, probes.stage_names) as hooks:
        model(torch.randn(2, 1, *([16] * dims)))
        logits = probes(hooks.features)
    assert {k: v.shape for k, v in logits.items()} == {s: (2, 3) for s in probes.stage_names}


def test_from_network_unknown_stage_lists_stages():
    with pytest.raises(ValueError, match="no stage.*'layer5'.*its stages: layer1, layer2, layer3, layer4"):
        StageProbes.from_network("resnet18", ["layer2", "layer5"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stage_channels={}), "non-empty"),
        (dict(stage_channels={"a.b": 4, "a-b": 4}), "collide"),
        (dict(stage_channels={"a": 0}), "in_channels"),
        (dict(stage_channels={"a": 4}, adapter_channels=0), "adapter_channels"),
        (dict(stage_channels={"a": 4}, spatial_dims=1), "spatial_dims"),
    ],
)
def test_invalid_probe_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StageProbes(**kwargs)
