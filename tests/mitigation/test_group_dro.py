import pytest
import torch
import torch.nn.functional as F

from pipeline.mitigation import GroupDROLoss, GroupReweightedLoss


def _batch(labels, biases):
    return {"label": torch.tensor(labels), "bias": torch.tensor(biases)}


def test_reweighted_inverse_frequency_weights_balance_groups():
    counts = [10, 30, 0, 60]
    loss = GroupReweightedLoss(weights="inverse_frequency", counts=counts)
    w = loss.group_weights
    assert w[2] == 0
    # every non-empty group carries the same total weight, and the mean sample weight is 1
    totals = [c * float(w[g]) for g, c in enumerate(counts) if c]
    assert totals == pytest.approx([totals[0]] * 3)
    assert sum(totals) == pytest.approx(sum(counts))


def test_reweighted_loss_weights_samples_by_group():
    torch.manual_seed(0)
    logits = torch.randn(4, 2)
    target = torch.tensor([0, 0, 1, 1])
    ce = F.cross_entropy(logits, target, reduction="none")
    loss = GroupReweightedLoss(weights=[1.0, 0.0, 0.0, 2.0])
    loss.set_batch(_batch([0, 0, 1, 1], [0, 1, 0, 1]))
    assert torch.allclose(loss(logits, target), (ce[0] + 2 * ce[3]) / 4)
    assert torch.allclose(GroupReweightedLoss()(logits, target, groups=torch.arange(4)), ce.mean())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "balanced"}, "inverse_frequency"),
        ({"weights": "inverse_frequency"}, "counts"),
        ({"weights": "inverse_frequency", "counts": [1, 2]}, "counts"),
        ({"weights": [1.0, -1.0, 1.0, 1.0]}, "weights"),
    ],
)
def test_reweighted_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupReweightedLoss(**kwargs)


def test_set_batch_names_missing_key_and_loss_needs_groups():
    loss = GroupDROLoss()
    with pytest.raises(ValueError, match="'bias'"):
        loss.set_batch({"image": torch.zeros(2), "label": torch.tensor([0, 1])})
    with pytest.raises(RuntimeError, match="set_batch"):
        loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    loss.set_batch(_batch([0, 1, 1], [0, 0, 1]))
    with pytest.raises(ValueError, match="batch size"):
        loss(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_set_batch_accepts_one_hot_and_column_labels():
    loss = GroupDROLoss()
    loss.set_batch({"label": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "bias": torch.tensor([[1], [0]])})
    assert loss._groups.tolist() == [1, 2]


def test_dro_raises_weight_of_worst_group_and_keeps_absent_groups():
    loss = GroupDROLoss(eta=0.5)
    groups = torch.tensor([0, 1, 2, 2])
    target = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # group 2 misclassified
    history = [loss.group_weights.clone()]
    for _ in range(5):
        loss(logits, target, groups=groups)
        history.append(loss.group_weights.clone())
    worst = torch.stack(history)[:, 2]
    assert (worst[1:] > worst[:-1]).all()
    assert all(float(q[3]) == pytest.approx(0.25) for q in history)  # group 3 never in a batch
    assert float(history[-1].sum()) == pytest.approx(1.0)


def test_dro_loss_is_weighted_sum_of_group_means_and_eval_freezes_q():
    loss = GroupDROLoss(eta=1.0).eval()
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]], requires_grad=True)
    target = torch.tensor([1, 1, 1])
    ce = F.cross_entropy(logits, target, reduction="none")
    out = loss(logits, target, groups=torch.tensor([0, 2, 2]))
    assert torch.allclose(out, 0.25 * ce[0] + 0.25 * (ce[1] + ce[2]) / 2)
    assert torch.equal(loss.group_weights, torch.full((4,), 0.25))
    out.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_dro_worst_group_weight_rises_while_training_a_toy_model():
    torch.manual_seed(0)
    n = 64
    label = torch.randint(0, 2, (n,))
    bias = label.clone()
    bias[:6] = 1 - bias[:6]  # minority groups: shortcut disagrees with the label
    x = torch.stack([bias.float() * 2 - 1, 0.1 * torch.randn(n)], 1)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = GroupDROLoss(eta=0.1)
    loss.set_batch({"label": label, "bias": bias})
    worst_group = int(2 * label[0] + bias[0])
    start = float(loss.group_weights[worst_group])
    for _ in range(20):
        optimizer.zero_grad()
        loss(model(x), label).backward()
        optimizer.step()
    assert float(loss.group_weights[worst_group]) > start
    assert int(loss.group_weights.argmax()) in {int(2 * label[i] + bias[i]) for i in range(6)}


def test_dro_state_dict_round_trip_and_counts_options():
    loss = GroupDROLoss(eta=1.0)
    loss(torch.tensor([[0.0, 3.0]]), torch.tensor([0]), groups=torch.tensor([1]))
    restored = GroupDROLoss()
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.group_weights, loss.group_weights)

    with_empty = GroupDROLoss(counts=[5, 0, 5, 5])
    assert with_empty.group_weights.tolist() == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3])
    adjusted = GroupDROLoss(eta=1.0, adjustment=1.0, counts=[100, 4, 100, 4])
    logits, target = torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])
    adjusted(logits, target, groups=torch.arange(4))  # equal losses: small groups gain weight
    q = adjusted.group_weights
    assert q[1] > q[0] and q[3] > q[2]
    with pytest.raises(ValueError, match="counts"):
        GroupDROLoss(adjustment=1.0)
    with pytest.raises(ValueError, match="eta"):
        GroupDROLoss(eta=0)
