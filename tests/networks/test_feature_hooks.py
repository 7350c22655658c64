"""FeatureHooks: capture named modules' outputs, accept DP/DDP names, leave nothing behind."""

import weakref

import pytest
import torch
from torch import nn

from pipeline.networks import build_network
from pipeline.networks.hooks import FeatureHooks


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_network("small_cnn", 2, 1, 2, channels=[4, 8, 8, 16])


def x_batch(n=2):
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(3))


def hook_counts(network):
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in network.modules()]


def test_features_follow_given_names_and_order(model):
    with FeatureHooks(model, ["stage3", "stage1", "stage2.0.conv"]) as hooks:
        model(x_batch())
        features = hooks.features
    assert list(features) == ["stage3", "stage1", "stage2.0.conv"]
    assert [f.shape[1] for f in features.values()] == [8, 4, 8]
    # stage1's output is what stage2 receives: check it against stage2's first conv by hand
    torch.testing.assert_close(features["stage2.0.conv"], model.stage2[0].conv(features["stage1"]))


def test_hooks_removed_after_context_and_after_exception(model):
    before = hook_counts(model)
    with FeatureHooks(model, ["stage1", "stage4"]) as hooks:
        assert hook_counts(model) != before
        model(x_batch())
    assert hook_counts(model) == before and hooks.features == {}
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureHooks(model, ["stage1", "stage4"]):
            model(x_batch())
            raise RuntimeError("boom")
    assert hook_counts(model) == before


def test_register_and_remove_without_context(model):
    before = hook_counts(model)
    hooks = FeatureHooks(model, ["stage2"]).register()
    assert hooks.registered
    with pytest.raises(RuntimeError, match="already registered"):
        hooks.register()
    model(x_batch())
    assert hooks.features["stage2"].shape == (2, 8, 8, 8)
    hooks.remove()
    hooks.remove()  # idempotent
    assert not hooks.registered and hook_counts(model) == before


def test_wrong_name_lists_registry_stages(model):
    with pytest.raises(
        ValueError, match=r"no module \['stage9'\]; its stages: stage1, stage2, stage3, stage4"
    ):
        FeatureHooks(model, ["stage1", "stage9"])


def test_wrong_name_on_unregistered_model_lists_module_paths():
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"no module \['conv'\]; its module paths: 0, 1$"):
        FeatureHooks(plain, ["conv"])


@pytest.mark.parametrize("names", [[], ["stage1", "stage1"], [""], "stage1,stage2"])
def test_bad_name_lists(model, names):
    with pytest.raises(ValueError):
        FeatureHooks(model, names)


@pytest.mark.parametrize("wrap,name", [(True, "stage2"), (True, "module.stage2"), (False, "module.stage2")])
def test_parallel_prefix_accepted_both_ways(model, wrap, name):
    network = nn.DataParallel(model) if wrap else model
    with FeatureHooks(network, [name]) as hooks:
        out = network(x_batch())
        captured = hooks.features[name]
    assert out.shape == (2, 2)
    assert captured.shape == (2, 8, 8, 8)
    assert sum(hook_counts(model)) == 0


def test_wrong_name_on_wrapped_model_lists_registry_stages(model):
    with pytest.raises(ValueError, match="its stages: stage1"):
        FeatureHooks(nn.DataParallel(model), ["module.stage7"])


def test_student_features_carry_gradients_teacher_features_do_not(model):
    with FeatureHooks(model, ["stage2"]) as hooks:
        model(x_batch())
        hooks.features["stage2"].mean().backward()
    assert model.stage1[0].conv.weight.grad is not None and model.stage1[0].conv.weight.grad.abs().sum() > 0
    assert model.stage3[0].conv.weight.grad is None  # after the hooked stage: untouched by that loss
    with FeatureHooks(model, ["stage2"], detach=True) as hooks:
        model(x_batch())
        assert not hooks.features["stage2"].requires_grad


def test_no_feature_map_survives_the_step(model):
    hooks = FeatureHooks(model, ["stage1", "stage3"]).register()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    refs = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model(x_batch()).sum() + sum(f.mean() for f in hooks.features.values())
        loss.backward()
        optimizer.step()
        refs.append([weakref.ref(f) for f in hooks.features.values()])
        del loss
        # the previous step's feature maps are gone once this step's forward has run
        assert all(r() is None for step in refs[:-1] for r in step)
    assert all(r() is not None for r in refs[-1])
    hooks.clear()
    assert all(r() is None for r in refs[-1])
    assert sum(hook_counts(model)) == 2 + 1  # two forward hooks and one pre-hook, however many steps
    hooks.remove()
    assert sum(hook_counts(model)) == 0

