"""Saliency maps find the region a model reads, in 2D and 3D, without changing the model."""

from collections import OrderedDict

import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn

from pipeline.evaluation.saliency import default_target_layer, saliency_grid, saliency_maps

SIZE, CORNER = 16, 4


class CornerGate(nn.Module):
    """Zero every feature outside the first ``corner`` voxels of each spatial axis."""

    def __init__(self, size, corner, dims):
        super().__init__()
        mask = torch.zeros((1, 1) + (size,) * dims)
        mask[(slice(None), slice(None)) + (slice(0, corner),) * dims] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


def corner_model(dims, size=SIZE):
    """Class-1 logit = mean of ReLU(conv(x)) over the corner only: nothing else can matter.

    Positive conv weights make every feature grow with the intensities it sees, so occluding
    (darkening) the corner lowers the class-1 probability.
    """
    conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
    pool = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[dims - 2]
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv=conv(1, 4, 3, padding=1),
            act=nn.ReLU(inplace=True),
            gate=CornerGate(size, CORNER, dims),
            pool=pool(1),
            flat=nn.Flatten(),
            head=nn.Linear(4, 2),
        )
    )
    with torch.no_grad():
        model.conv.weight.abs_()
        model.conv.bias.zero_()
        model.head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
        model.head.bias.zero_()
    return model


def images(dims, batch=2, size=SIZE, seed=1):
    return torch.rand((batch, 1) + (size,) * dims, generator=torch.Generator().manual_seed(seed))


def _argmax_in_corner(maps, margin=0):
    for saliency in maps[:, 0]:
        peak = torch.unravel_index(saliency.argmax(), saliency.shape)
        assert all(int(i) < CORNER + margin for i in peak), f"peak at {[int(i) for i in peak]}"


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_peaks_in_the_region_the_logit_reads(dims):
    maps = saliency_maps(corner_model(dims), images(dims), method="gradcam", target_layer="gate")
    assert maps.shape == (2, 1) + (SIZE,) * dims  # full resolution, full volume in 3D
    assert float(maps.min()) >= 0.0 and float(maps.amax(dim=tuple(range(1, dims + 2))).min()) == pytest.approx(1.0)
    _argmax_in_corner(maps)
    outside = maps[(slice(None), 0) + (slice(CORNER + 1, None),) * dims]
    assert float(outside.max()) == pytest.approx(0.0, abs=1e-6)


def test_occlusion_peaks_in_the_region_the_logit_reads_2d():
    maps = saliency_maps(corner_model(2), images(2), method="occlusion", occlusion_kwargs={"mask_size": 4})
    assert maps.shape == (2, 1, SIZE, SIZE)
    _argmax_in_corner(maps)
    # outside the corner only rounding of the logits remains (measured 1.2e-7 against a corner peak of 0.023)
    peak = float(maps[:, 0, :CORNER, :CORNER].max())
    assert peak > 0 and float(maps[:, 0, 8:, 8:].abs().max()) < 1e-3 * peak


def test_occlusion_3d_returns_volume_and_finds_corner():
    maps = saliency_maps(
        corner_model(3, size=8), images(3, batch=1, size=8), method="occlusion",
        occlusion_kwargs={"mask_size": 4, "overlap": 0.0, "n_batch": 8},
    )
    assert maps.shape == (1, 1, 8, 8, 8)
    _argmax_in_corner(maps)


def test_model_is_left_unchanged_and_frozen_models_work():
    model = corner_model(2).train()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(2)
    x_before = x.clone()
    maps = saliency_maps(model, x, target_layer="gate")
    _argmax_in_corner(maps)
    assert model.training and model.act.inplace
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, x_before) and not x.requires_grad


def test_default_layer_and_bad_arguments():
    model = corner_model(2)
    assert default_target_layer(model) == "conv"
    with pytest.raises(ValueError, match="no convolution"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="target_layer 'layer9'"):
        saliency_maps(model, images(2), target_layer="layer9")
    with pytest.raises(ValueError, match="method"):
        saliency_maps(model, images(2), method="lime")
    with pytest.raises(ValueError, match="images"):
        saliency_maps(model, torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="class_idx"):
        saliency_maps(model, images(2), target_layer="gate", class_idx=5)
    with pytest.raises(ValueError, match="class_idx"):
        saliency_maps(model, images(2), method="occlusion", class_idx=5)


def test_gradcam_on_monai_3d_network_default_layer():
    torch.manual_seed(0)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=2, block_config=(2,))
    maps = saliency_maps(net, images(3, batch=2, size=12))
    assert maps.shape == (2, 1, 12, 12, 12)
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_saliency_grid_writes_png(tmp_path, dims):
    models = {"corner": corner_model(dims), "also corner": corner_model(dims)}
    out = saliency_grid(models, images(dims), tmp_path / "grid.png", target_layers={"corner": "gate"}, spatial_dims=dims)
    assert out == tmp_path / "grid.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


def test_saliency_grid_rejects_bad_arguments(tmp_path):
    models = {"corner": corner_model(2)}
    with pytest.raises(ValueError, match="3 spatial dims"):
        saliency_grid(models, images(2), tmp_path / "g.png", spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        saliency_grid(models, images(2), tmp_path / "g.png", spatial_dims=1)
    with pytest.raises(ValueError, match=r"target_layers names \['other'\]"):
        saliency_grid(models, images(2), tmp_path / "g.png", target_layers={"other": "gate"})
    with pytest.raises(ValueError, match="at least one model"):
        saliency_grid({}, images(2), tmp_path / "g.png")


def test_an_empty_loader_writes_nothing_when_asked_to_skip_it(tmp_path):
    """Pre-biased test data without bias-inverted images: the saliency workflow draws none."""
    from pipeline.evaluation.saliency import SALIENCY_FILE, write_saliency
    from pipeline.networks import build_network

    model = build_network("small_cnn", 2, 1, 2)
    with pytest.warns(UserWarning, match="no images to draw saliency maps for"):
        assert write_saliency(model, [], tmp_path, skip_empty=True) is None
    assert not (tmp_path / SALIENCY_FILE).exists()
    with pytest.raises(ValueError, match="loader yielded no images"):
        write_saliency(model, [], tmp_path)
