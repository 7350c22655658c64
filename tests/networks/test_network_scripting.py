"""Every registry network exports with MONAI's ckpt_export by scripting (model-zoo's default) and
the TorchScript module computes what the eager network computes; too-small inputs are refused
with the minimum size."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ckpt_export

from pipeline.networks import build_network, registered_networks
from pipeline.networks.alexnet import alexnet_min_input_size

BUILTIN = ("alexnet", "densenet121", "resnet18", "simba_cnn", "small_cnn")
# small inputs and heads keep the CPU time low (AlexNet's original stem needs >= 63 pixels)
OPTIONS = {"alexnet": dict(stem_kernel_size=3, stem_stride=2, stem_padding=1, hidden_features=64)}
SIDE = {2: 32, 3: 32}


def test_every_registered_network_is_covered():
    assert set(BUILTIN) == set(registered_networks())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUILTIN)
def test_ckpt_export_by_scripting_matches_eager(tmp_path, name, dims):
    options = OPTIONS.get(name, {})
    torch.manual_seed(0)
    network = build_network(name, dims, 1, 2, **options).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a mix-up of train/eval shows
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    config = {
        "network_def": {
            "_target_": "pipeline.networks.build_network",
            "name": name,
            "spatial_dims": dims,
            "in_channels": 1,
            "num_classes": 2,
            **options,
        }
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "config.json"),
    )  # use_trace defaults to False: torch.jit.script
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(2, 1, *[SIDE[dims]] * dims, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = network(x), scripted(x)
    assert actual.shape == (2, 2)
    scale = expected.abs().max().item()
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize(
    "options,minimum",
    [({}, 63), (dict(stem_kernel_size=3, stem_stride=1, stem_padding=1), 15), (dict(stem_stride=2), 35)],
)
def test_alexnet_minimum_input_size_is_exact(options, minimum):
    assert alexnet_min_input_size(**options) == minimum
    network = build_network("alexnet", 2, 1, 2, hidden_features=8, **options).eval()
    with torch.no_grad():
        assert network(torch.rand(1, 1, minimum, minimum + 5)).shape == (1, 2)
        with pytest.raises(ValueError, match=rf"at least {minimum} pixels.*stem_kernel_size"):
            network(torch.rand(1, 1, minimum + 5, minimum - 1))


@pytest.mark.parametrize("dims", [2, 3])
def test_densenet121_minimum_input_size_is_exact(dims):
    network = build_network("densenet121", dims, 1, 2, init_features=4, growth_rate=2).eval()
    with torch.no_grad():
        assert network(torch.rand(1, 1, *[29] * dims)).shape == (1, 2)
        with pytest.raises(ValueError, match=r"densenet121 needs inputs of at least 29 pixels.*image_size"):
            network(torch.rand(1, 1, *[28] * dims))


def test_too_small_input_error_survives_scripting():
    network = torch.jit.script(build_network("alexnet", 2, 1, 2, hidden_features=8).eval())
    with pytest.raises(Exception, match=r"at least 63 pixels.*stem_padding"):
        network(torch.rand(1, 1, 62, 62))


@pytest.mark.parametrize("dims", [2, 3])
def test_small_cnn_refuses_inputs_below_two_to_the_number_of_stages(dims):
    network = build_network("small_cnn", dims, 1, 2, channels=[4, 8, 8]).eval()
    with torch.no_grad():
        assert network(torch.rand(1, 1, *[8] * dims)).shape == (1, 2)
        with pytest.raises(ValueError, match=r"small_cnn needs inputs of at least 8 pixels"):
            network(torch.rand(1, 1, *[7] * dims))
