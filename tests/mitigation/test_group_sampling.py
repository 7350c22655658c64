import numpy as np
import pytest
from monai.bundle import ConfigParser
from torch.utils.data import WeightedRandomSampler

import pipeline.mitigation
from pipeline.mitigation import datalist_groups, group_balanced_sampler


def test_datalist_groups_from_bias_key_or_decision():
    items = [
        {"id": "a", "label": 0, "bias": 1},
        {"id": "b", "label": 1, "bias": 0},
        {"id": "c", "label": 1, "bias": 1},
    ]
    assert datalist_groups(items) == [1, 2, 3]
    assert datalist_groups(items, decide=lambda item: item["id"] == "b") == [0, 3, 2]
    assert items[0] == {"id": "a", "label": 0, "bias": 1}


def test_datalist_groups_with_decide_keys_from_a_bundle_expression():
    class Injection:
        def decide(self, label, sample_id):
            return int(sample_id in ("a", "c"))

    parser = ConfigParser(
        {
            "inject": "$Injection()",
            "items": [{"id": "a", "label": 0}, {"id": "b", "label": 1}, {"id": "c", "label": 1}],
            "groups": "$pipeline.mitigation.datalist_groups(@items, decide=@inject.decide, decide_keys=['label', 'id'])",
        },
        globals={"Injection": Injection, "pipeline": pipeline},
    )
    assert parser.get_parsed_content("groups") == [1, 2, 3]


def test_datalist_groups_names_missing_key():
    with pytest.raises(ValueError, match="'bias'"):
        datalist_groups([{"label": 0}])
    with pytest.raises(ValueError, match="'label'"):
        datalist_groups([{"bias": 0}], decide=lambda item: 0)
    with pytest.raises(ValueError, match="'id'"):
        datalist_groups([{"label": 0}], decide=lambda label, sample_id: 0, decide_keys=["label", "id"])


@pytest.mark.parametrize("counts", [[500, 50, 20, 430], [300, 0, 10, 90]])
def test_sampler_draws_groups_equally(counts):
    groups = np.repeat(np.arange(4), counts)
    num_samples = 6000
    sampler = group_balanced_sampler(groups, num_samples=num_samples, seed=3)
    assert isinstance(sampler, WeightedRandomSampler)
    drawn = groups[list(sampler)]
    present = [g for g, c in enumerate(counts) if c]
    p = 1 / len(present)
    tolerance = 4 * np.sqrt(num_samples * p * (1 - p))  # 4 binomial standard deviations
    for g in range(4):
        expected = num_samples * p if g in present else 0
        assert abs((drawn == g).sum() - expected) <= tolerance


def test_sampler_is_seeded():
    groups = [0] * 30 + [1] * 5 + [3] * 5
    first = list(group_balanced_sampler(groups, seed=1))
    assert first == list(group_balanced_sampler(groups, seed=1))
    assert first != list(group_balanced_sampler(groups, seed=2))
    assert len(first) == len(groups)


@pytest.mark.parametrize(
    "groups, num_samples, match",
    [([], None, "empty"), ([0, -1], None, "non-negative"), ([0, 1], 0, "num_samples")],
)
def test_sampler_rejects_bad_input(groups, num_samples, match):
    with pytest.raises(ValueError, match=match):
        group_balanced_sampler(groups, num_samples=num_samples)
