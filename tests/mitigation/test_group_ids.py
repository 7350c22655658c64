import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.mitigation import group_counts, group_index, per_sample_cross_entropy


def test_group_index_scalars_cover_four_groups():
    groups = {(label, bias): group_index(label, bias) for label in (0, 1) for bias in (0, 1)}
    assert groups == {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}
    assert isinstance(groups[(1, 1)], int)


def test_group_index_tensor_and_array_shapes():
    label = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    bias = torch.tensor([True, False, True, True])
    out = group_index(label, bias)
    assert out.dtype == torch.long
    assert out.tolist() == [1, 2, 3, 1]
    arr = group_index(np.array([1, 0]), [1, 0])
    assert isinstance(arr, np.ndarray) and arr.tolist() == [3, 0]


@pytest.mark.parametrize(
    "label, bias, match",
    [
        ([0, 2], [0, 1], "label"),
        ([0, 1], [0.5, 1], "bias"),
        ([0, 1, 1], [0, 1], "same number"),
        (["a"], [0], "label"),
    ],
)
def test_group_index_rejects_bad_values(label, bias, match):
    with pytest.raises(ValueError, match=match):
        group_index(label, bias)


def test_group_counts():
    assert group_counts([0, 3, 3, 1]) == [1, 1, 0, 2]
    assert group_counts(torch.tensor([1, 1])) == [0, 2, 0, 0]
    with pytest.raises(ValueError, match="groups"):
        group_counts([4])


def test_per_sample_cross_entropy_accepts_index_column_and_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    index = torch.tensor([0, 2, 1, 1, 0])
    expected = F.cross_entropy(logits, index, reduction="none")
    for target in (index, index[:, None].float(), F.one_hot(index, 3).float()):
        assert torch.allclose(per_sample_cross_entropy(logits, target), expected)


@pytest.mark.parametrize(
    "logits, target, match",
    [
        (torch.zeros(3, 1), torch.zeros(3), "C >= 2"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), r"\[0, 2\)"),
        (torch.zeros(3, 2), torch.tensor([0.0, 0.5, 1.0]), "integer"),
        (torch.zeros(3, 2), torch.zeros(4), "batch size"),
        (torch.zeros(2, 2), torch.tensor([[0.9, 0.9], [0.5, 0.5]]), "sum to 1"),
        (torch.zeros(2, 3), torch.zeros(2, 2), "does not fit"),
    ],
)
def test_per_sample_cross_entropy_rejects_bad_targets(logits, target, match):
    with pytest.raises(ValueError, match=match):
        per_sample_cross_entropy(logits, target)
