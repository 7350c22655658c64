"""The network registry: every network builds in 2D and 3D, trains, and its stages are honest."""

from collections import OrderedDict
from functools import lru_cache

import pytest
import torch
from torch import nn

from pipeline.networks import build_network, network_stages, register_network, registered_networks, stages_of
from pipeline.networks import registry as registry_module
from pipeline.networks.hooks import FeatureHooks

NUM_CLASSES = 3  # not 2, so a hard-coded head size shows
BUILTIN = ("alexnet", "densenet121", "resnet18", "simba_cnn", "small_cnn")
# options for small 3D inputs (AlexNet's original stem needs >= 63 voxels per side)
SMALL_INPUT_OPTIONS = {("alexnet", 3): dict(stem_kernel_size=3, stem_stride=2, stem_padding=1)}
INPUT_SHAPES = {2: (64, 64), 3: (32, 32, 32)}
CASES = [(name, dims) for name in BUILTIN for dims in (2, 3)]


@lru_cache(maxsize=None)
def cached_network(name: str, dims: int, in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build_network(name, dims, in_channels, NUM_CLASSES, **SMALL_INPUT_OPTIONS.get((name, dims), {}))


def batch(dims: int, in_channels: int = 1) -> torch.Tensor:
    return torch.randn(2, in_channels, *INPUT_SHAPES[dims], generator=torch.Generator().manual_seed(1))


def manual_stage_outputs(module: nn.Module, stages: list, x: torch.Tensor, prefix: str = "") -> dict:
    """Run ``module``'s children one after another in registration order (the forward order of every
    built-in network up to its last stage) and keep the outputs of the modules named in ``stages``."""
    outputs = {}
    for name, child in module.named_children():
        path = prefix + name
        if any(stage.startswith(path + ".") for stage in stages):  # a stage inside this child: descend
            assert isinstance(child, nn.Sequential), path
            outputs.update(manual_stage_outputs(child, stages, x, prefix=path + "."))
        x = child(x)
        if path in stages:
            outputs[path] = x
        if all(stage in outputs for stage in stages if stage.startswith(prefix)):
            break
    return outputs


def test_builtin_networks_are_registered():
    assert set(BUILTIN) <= set(registered_networks())


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_backward_stage_channels_and_features(name, dims):
    model = cached_network(name, dims).train()
    stages = network_stages(name, dims, 1, NUM_CLASSES, **SMALL_INPUT_OPTIONS.get((name, dims), {}))
    assert stages_of(model) == stages
    x = batch(dims)
    with FeatureHooks(model, list(stages)) as hooks:
        logits = model(x)
        captured = hooks.features
    assert logits.shape == (2, NUM_CLASSES)
    assert list(captured) == list(stages)
    for stage, channels in stages.items():
        assert captured[stage].shape[:2] == (2, channels), stage
        assert captured[stage].ndim == dims + 2, stage
    # the hooks return what running the same modules by hand returns (train mode: batch statistics)
    with torch.no_grad():
        manual = manual_stage_outputs(model, list(stages), x)
    for stage in stages:
        torch.testing.assert_close(captured[stage].detach(), manual[stage], msg=stage)
    model.zero_grad()
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", BUILTIN)
def test_rgb_input(name):
    model = cached_network(name, 2, in_channels=3).eval()
    with torch.no_grad():
        assert model(batch(2, in_channels=3)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    "name,options,expected",
    [
        ("resnet18", dict(widen_factor=0.5), [32, 64, 128, 256]),
        ("densenet121", dict(init_features=16, growth_rate=8), [64, 128, 256, 256]),
        ("alexnet", dict(width=0.5), [32, 96, 192, 128, 128]),
        ("simba_cnn", dict(channels=[4, 8, 8, 16, 16]), [4, 8, 8, 16, 16]),
        ("small_cnn", dict(channels=[4, 8, 12]), [4, 8, 12]),
    ],
)
def test_channel_options_change_stages_and_model(name, options, expected):
    stages = network_stages(name, 2, 1, 2, **options)
    assert list(stages.values()) == expected
    torch.manual_seed(0)
    model = build_network(name, 2, 1, 2, **options).eval()
    with torch.no_grad(), FeatureHooks(model, list(stages)) as hooks:
        model(torch.randn(1, 1, 64, 64))
        assert [hooks.features[s].shape[1] for s in stages] == expected


@pytest.mark.parametrize("convs_per_stage", [1, 2])
def test_small_cnn_stage_depth_and_downsampling(convs_per_stage):
    model = build_network("small_cnn", 2, 1, 2, channels=[4, 8, 8], convs_per_stage=convs_per_stage)
    assert [len(getattr(model, f"stage{i}")) for i in (1, 2, 3)] == [convs_per_stage + 1] * 3  # convs + pool
    with torch.no_grad(), FeatureHooks(model, ["stage1", "stage2", "stage3"]) as hooks:
        model(torch.randn(1, 1, 32, 24))
        assert [tuple(f.shape[2:]) for f in hooks.features.values()] == [(16, 12), (8, 6), (4, 3)]


def test_unknown_network_lists_registered_names():
    with pytest.raises(ValueError, match="registered networks: .*resnet18.*small_cnn"):
        build_network("resnet19")
    with pytest.raises(ValueError, match="resnet19"):
        network_stages("resnet19")


def test_unknown_option_lists_allowed_options():
    with pytest.raises(ValueError, match=r"\['widht'\].*allowed options: .*width"):
        build_network("alexnet", widht=0.5)
    with pytest.raises(ValueError, match="never downloaded"):
        build_network("resnet18", pretrained=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(in_channels=0), "in_channels"),
        (dict(num_classes=2.0), "num_classes"),
    ],
)
def test_invalid_common_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_network("small_cnn", **kwargs)


def test_resnet_options_reach_monai():
    model = build_network("resnet18", 2, conv1_t_stride=2, no_max_pool=True)
    assert model.conv1.stride == (2, 2) and model.no_max_pool


def test_same_seed_same_network_and_outputs():
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_network("small_cnn", 2, 1, 2).eval()
        with torch.no_grad():
            outputs.append(model(batch(2)))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


class TinyNet(nn.Module):
    def __init__(self, spatial_dims=2, in_channels=1, num_classes=2, hidden=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def tiny_registered():
    register_network("tiny_test_net", TinyNet, lambda hidden=4, **_: OrderedDict(body=hidden))
    yield "tiny_test_net"
    registry_module._REGISTRY.pop("tiny_test_net")


def test_register_user_network(tiny_registered):
    assert tiny_registered in registered_networks()
    assert network_stages(tiny_registered, hidden=6) == OrderedDict(body=6)
    model = build_network(tiny_registered, 2, 3, 5, hidden=6)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError, match="allowed options: hidden"):
        build_network(tiny_registered, depth=2)
    with pytest.raises(ValueError, match="already registered"):
        register_network(tiny_registered, TinyNet, {"body": 4})


def test_registered_stage_missing_from_model_is_rejected(tiny_registered):
    register_network(tiny_registered, TinyNet, {"trunk": 4}, overwrite=True)
    with pytest.raises(ValueError, match=r"stages \['trunk'\]"):
        build_network(tiny_registered)


def test_alexnet_kaiming_init_keeps_the_signal_that_the_default_init_shrinks():
    """He-normal convolutions (fan-out) and N(0, 0.01) linear layers, biases 0; an unknown init is refused."""
    from pipeline.networks.alexnet import AlexNet

    torch.manual_seed(0)
    options = dict(stem_kernel_size=5, stem_stride=2, stem_padding=2, hidden_features=64)
    default, kaiming = AlexNet(**options), AlexNet(init="kaiming", **options)
    conv = kaiming.features.block3[0]
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert float(conv.weight.std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert all(float(m.bias.abs().max()) == 0.0 for m in kaiming.modules() if isinstance(m, torch.nn.Linear))
    assert float(kaiming.classifier[1].weight.std()) == pytest.approx(0.01, rel=0.05)
    x = torch.rand(8, 1, 64, 64)
    with torch.no_grad():
        features = [net.features(x).std() for net in (default, kaiming)]
    assert features[1] > 2 * features[0]  # block5 output std: 0.014 with the default init, 0.050 with kaiming
    with pytest.raises(ValueError, match=r"init must be one of \['pytorch', 'kaiming'\], got 'he'"):
        AlexNet(init="he")


def test_alexnet_batch_norm_normalises_each_convolution_and_keeps_the_stage_names():
    """norm="batch": a batch norm between each conv and its ReLU (train mode: zero-mean, unit-std
    channels before the ReLU); the stage paths and channels stay those of the original; unknown norms are refused."""
    from pipeline.networks.alexnet import AlexNet

    torch.manual_seed(0)
    options = dict(stem_kernel_size=5, stem_stride=2, stem_padding=2, hidden_features=64)
    plain, normed = AlexNet(**options), AlexNet(norm="batch", **options)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    for name in ("block1", "block2", "block3", "block4", "block5"):
        layers = list(getattr(normed.features, name))
        assert isinstance(layers[0], torch.nn.Conv2d) and isinstance(layers[1], torch.nn.BatchNorm2d)
        assert layers[1].num_features == layers[0].out_channels and isinstance(layers[2], torch.nn.ReLU)
    captured = {}
    normed.features.block4[1].register_forward_hook(lambda m, i, o: captured.update(out=o))
    normed.train()(torch.rand(8, 1, 64, 64))
    per_channel = captured["out"].transpose(0, 1).flatten(1)
    assert float(per_channel.mean(1).abs().max()) < 1e-4
    assert float(per_channel.std(1).mean()) == pytest.approx(1.0, rel=0.05)
    assert [n for n, _ in normed.features.named_children()] == [n for n, _ in plain.features.named_children()]
    volume = AlexNet(spatial_dims=3, norm="batch", stem_kernel_size=3, stem_stride=1, stem_padding=1, hidden_features=8)
    assert isinstance(volume.features.block1[1], torch.nn.BatchNorm3d)
    with pytest.raises(ValueError, match=r"norm must be one of \[None, 'batch'\], got 'instance'"):
        AlexNet(norm="instance")
