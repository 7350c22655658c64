"""Weights trained elsewhere load into the registry's networks: torchvision's and MedicalNet's names,
an RGB stem into a grey network. No download: the foreign files are written here with their names."""

from __future__ import annotations

import re

import pytest
import torch

from pipeline.networks import build_network, load_checkpoint
from pipeline.networks.pretrained import adapt_input_channels, rename_keys

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torchvision_resnet18_keys() -> list[str]:
    """torchvision's resnet18 state-dict names, written out from its architecture."""
    keys = ["conv1.weight"] + [f"bn1.{p}" for p in BN]
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            keys += [f"{prefix}.conv1.weight"] + [f"{prefix}.bn1.{p}" for p in BN]
            keys += [f"{prefix}.conv2.weight"] + [f"{prefix}.bn2.{p}" for p in BN]
            if layer > 1 and block == 0:
                keys += [f"{prefix}.downsample.0.weight"] + [f"{prefix}.downsample.1.{p}" for p in BN]
    return keys + ["fc.weight", "fc.bias"]


def _randomized(model):
    """Non-trivial BatchNorm statistics, so that a wrong mapping shows in the outputs."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def _pooled(model, images):
    features = {}
    handle = model.avgpool.register_forward_hook(lambda m, i, o: features.setdefault("x", o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return features["x"].flatten(1)


def test_an_imagenet_resnet18_loads_into_a_grey_two_class_resnet18(tmp_path):
    torch.manual_seed(0)
    imagenet = _randomized(build_network("resnet18", 2, 3, 1000, conv1_t_stride=2, bias_downsample=False))
    assert list(imagenet.state_dict()) == _torchvision_resnet18_keys()  # the names torchvision writes
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet.state_dict(), path)

    grey = build_network("resnet18", 2, 1, 2, conv1_t_stride=2, bias_downsample=False)
    report = load_checkpoint(grey, path, strict=False, key_map="torchvision_resnet", adapt_channels=True)
    assert report.adapted_keys == ("conv1.weight",)
    assert set(report.shape_mismatched_keys) == {"fc.weight", "fc.bias"} and not report.missing_keys
    torch.testing.assert_close(grey.conv1.weight, imagenet.conv1.weight.sum(dim=1, keepdim=True))
    images = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(  # a grey image = the RGB network's response to it in every colour
        _pooled(grey.eval(), images), _pooled(imagenet, images.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5
    )


def test_without_channel_adaptation_the_rgb_stem_is_skipped_and_reported(tmp_path):
    imagenet = build_network("resnet18", 2, 3, 1000, conv1_t_stride=2, bias_downsample=False)
    torch.save(imagenet.state_dict(), tmp_path / "w.pth")
    grey = build_network("resnet18", 2, 1, 2, conv1_t_stride=2, bias_downsample=False)
    report = load_checkpoint(grey, tmp_path / "w.pth", strict=False)
    assert "conv1.weight" in report.shape_mismatched_keys and report.adapted_keys == ()


@pytest.mark.parametrize("old_style", [True, False])
def test_a_torchvision_densenet121_loads_through_its_key_map(tmp_path, old_style):
    torch.manual_seed(0)
    rgb = _randomized(build_network("densenet121", 2, 3, 2))
    # torchvision's names: denselayerN.norm1 (older files: denselayerN.norm.1), classifier
    layer = r".\1.\2." if old_style else r".\1\2."
    state = {
        re.sub(r"\.layers\.(norm|relu|conv)([12])\.", layer, k).replace("class_layers.out", "classifier"): v
        for k, v in rgb.state_dict().items()
    }
    assert any((".norm.1." if old_style else ".denselayer1.norm1.") in k for k in state)
    torch.save(state, tmp_path / "densenet121.pth")
    grey = build_network("densenet121", 2, 1, 2)
    report = load_checkpoint(grey, tmp_path / "densenet121.pth", strict=False, key_map="torchvision_densenet",
                             adapt_channels=True)
    assert report.adapted_keys == ("features.conv0.weight",)
    assert set(report.missing_keys) == {"class_layers.out.weight", "class_layers.out.bias"}
    assert set(report.unexpected_keys) == {"classifier.weight", "classifier.bias"}
    expected = {k: v for k, v in rgb.state_dict().items() if k.startswith("features.") and k != "features.conv0.weight"}
    loaded = grey.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_a_medicalnet_resnet18_loads_with_its_shortcut_settings(tmp_path):
    medicalnet = build_network("resnet18", 3, 1, 2, shortcut_type="A", bias_downsample=True)
    state = {f"module.{k}": v for k, v in medicalnet.state_dict().items() if not k.startswith("fc.")}
    state["module.conv_seg.0.weight"] = torch.zeros(32, 512, 3, 3, 3)  # its segmentation head
    torch.save({"state_dict": state}, tmp_path / "resnet_18.pth")
    network = build_network("resnet18", 3, 1, 2, shortcut_type="A", bias_downsample=True)
    report = load_checkpoint(network, tmp_path / "resnet_18.pth", strict=False, key_map="medicalnet_resnet")
    assert set(report.missing_keys) == {"fc.weight", "fc.bias"}
    assert report.unexpected_keys == ("conv_seg.0.weight",)
    assert torch.equal(network.layer4[1].conv2.weight, medicalnet.layer4[1].conv2.weight)


def test_one_channel_kernels_are_shared_over_the_colours():
    saved = {"conv.weight": torch.arange(8.0).reshape(2, 1, 2, 2), "other.weight": torch.ones(2, 5, 3)}
    expected = {"conv.weight": torch.zeros(2, 3, 2, 2), "other.weight": torch.zeros(2, 4, 3)}
    adapted, keys = adapt_input_channels(saved, expected)
    assert keys == ("conv.weight",)
    torch.testing.assert_close(adapted["conv.weight"], saved["conv.weight"].repeat(1, 3, 1, 1) / 3)
    assert adapted["other.weight"] is saved["other.weight"]  # 5 -> 4 colours: left to the loader


def test_key_maps_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"key_map 'timm' is unknown; choose one of \['medicalnet_resnet'"):
        rename_keys({"a": torch.zeros(1)}, "timm")
    with pytest.raises(ValueError, match=r"key_map must be \[\[pattern, replacement\], \.\.\.\] of strings"):
        rename_keys({"a": torch.zeros(1)}, [["a"]])
    with pytest.raises(ValueError, match="renames two checkpoint keys to 'x'"):
        rename_keys({"a": torch.zeros(1), "b": torch.zeros(1)}, [["^[ab]$", "x"]])
    assert list(rename_keys({"module.a.b": 1}, [[r"^module\.", ""], [r"\.b$", ".c"]])) == ["a.c"]
