import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.networks.nets import DenseNet121
from torch import nn

from pipeline.mitigation import find_last_linear, freeze_all_but_last_layer, reset_last_layer


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.Dropout(0.5),
        nn.Linear(8, 2),
    )


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_find_last_linear():
    assert find_last_linear(_cnn()) == "7"
    assert find_last_linear(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)) == "class_layers.out"
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_last_linear(nn.Sequential(nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="ambiguous"):
        find_last_linear(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)))


def test_unknown_layer_name_is_reported():
    with pytest.raises(ValueError, match="'head'"):
        freeze_all_but_last_layer(_cnn(), last_layer_name="head")


def test_supervised_trainer_updates_only_the_last_layer():
    model = _cnn()
    params = freeze_all_but_last_layer(model)
    assert params == list(model[7].parameters())
    before = _snapshot(model)
    generator = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(1, 8, 8, generator=generator), "label": i % 2} for i in range(8)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=4),
        network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1),  # all params on purpose
        loss_function=nn.CrossEntropyLoss(),
    )
    trainer.run()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"7.weight", "7.bias"}  # BatchNorm running stats and num_batches_tracked unchanged
    assert model.training and model[7].training
    assert not model[1].training and not model[6].training


def test_train_mode_keeps_backbone_in_eval_and_dropout_off():
    model = _cnn()
    freeze_all_but_last_layer(model)
    freeze_all_but_last_layer(model)  # the second call replaces the hook
    assert len(model._forward_pre_hooks) == 1
    model.train()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), model(x))  # dropout of the frozen part is off
    assert [p.requires_grad for p in model.parameters()] == [False] * 6 + [True, True]


def test_parent_containers_of_the_last_layer_follow_train_mode():
    nested = nn.Sequential(
        nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Sequential(nn.Dropout(), nn.Linear(2, 2))
    )
    freeze_all_but_last_layer(nested)
    nested(torch.randn(2, 1, 1, 1))
    assert nested.training and nested[3].training and nested[3][1].training
    assert not nested[3][0].training and not nested[1].training
    nested.eval()
    nested(torch.randn(2, 1, 1, 1))
    assert not nested[3][1].training


def test_reset_last_layer_is_seeded_and_leaves_global_rng():
    first, second = _cnn(), _cnn()
    original = first[7].weight.detach().clone()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    assert reset_last_layer(first, seed=5) == "7"
    assert torch.equal(torch.random.get_rng_state(), state)
    freeze_all_but_last_layer(second, reset=True, seed=5)
    assert torch.equal(first[7].weight, second[7].weight)
    assert not torch.equal(first[7].weight, original)
    assert torch.equal(first[5].weight, second[5].weight)
    with pytest.raises(ValueError, match="reset_parameters"):
        reset_last_layer(nn.Sequential(nn.Linear(2, 2), _Scale()), last_layer_name="1")


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
