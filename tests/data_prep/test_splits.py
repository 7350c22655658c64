"""Role assignment: exact stratified counts, seeds, patient-level grouping, teacher options."""

import numpy as np
import pandas as pd
import pytest

from data_prep.splits import SplitSpec, assign_roles, parse_teacher_size


def _table(n=200, positives=60, patients=None):
    labels = np.array([1] * positives + [0] * (n - positives))
    table = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "label": labels})
    if patients:
        table["patient"] = [f"p{i % patients}" for i in range(n)]
    return table


def test_counts_are_exact_and_stratified():
    table = _table()
    roles = assign_roles(table, SplitSpec(val_fraction=0.1, test_fraction=0.2, teacher_size=30, seed=1))
    assert {k: len(v) for k, v in roles.items()} == {"train": 110, "teacher": 30, "validation": 20, "test": 40}
    for role, rows in roles.items():
        share = table["label"].iloc[rows].mean()
        assert share == pytest.approx(0.3, abs=0.02), role
    every = sorted(i for rows in roles.values() for i in rows)
    assert every == list(range(len(table)))  # disjoint and complete


def test_same_seed_same_roles_other_seed_other_roles():
    table = _table()
    spec = SplitSpec(teacher_size=0.1, seed=3)
    assert assign_roles(table, spec) == assign_roles(table, spec)
    assert assign_roles(table, spec) != assign_roles(table, SplitSpec(teacher_size=0.1, seed=4))


def test_patients_never_span_roles():
    table = _table(n=300, positives=90, patients=70)
    roles = assign_roles(table, SplitSpec(teacher_size=0.1, seed=0), group="patient")
    seen = {}
    for role, rows in roles.items():
        for patient in table["patient"].iloc[rows]:
            assert seen.setdefault(patient, role) == role
    sizes = {k: len(v) for k, v in roles.items()}
    assert abs(sizes["test"] - 60) <= 5 and abs(sizes["validation"] - 30) <= 5


def test_teacher_overlaps_train_when_not_disjoint():
    table = _table()
    roles = assign_roles(table, SplitSpec(teacher_size=20, teacher_disjoint=False, seed=0))
    assert len(roles["teacher"]) == 20
    assert set(roles["teacher"]) <= set(roles["train"])
    assert len(roles["train"]) == 140


def test_teacher_only_from_eligible_rows():
    table = _table()
    table["bias"] = np.arange(len(table)) % 2
    eligible = table["bias"] == 0
    roles = assign_roles(table, SplitSpec(teacher_size=25, seed=0), strata=("label", "bias"), teacher_eligible=eligible)
    assert len(roles["teacher"]) == 25
    assert set(table["bias"].iloc[roles["teacher"]]) == {0}


def test_too_large_requests_raise():
    with pytest.raises(ValueError, match="teacher_size"):
        assign_roles(_table(n=20, positives=10), SplitSpec(teacher_size=50))
    with pytest.raises(ValueError, match="sum must be < 1"):
        SplitSpec(val_fraction=0.5, test_fraction=0.4, teacher_size=0.2)
    with pytest.raises(ValueError, match="val_fraction"):
        SplitSpec(val_fraction=-0.1)
    with pytest.raises(ValueError, match="columns"):
        assign_roles(_table(), SplitSpec(), strata=("sex",))


@pytest.mark.parametrize("text, expected", [("500", 500), ("0.1", 0.1), (7, 7), (0.25, 0.25)])
def test_parse_teacher_size_accepts_counts_and_fractions(text, expected):
    value = parse_teacher_size(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1.5", "-3", "many", "0.0"])
def test_parse_teacher_size_rejects(text):
    with pytest.raises(ValueError, match="teacher_size"):
        parse_teacher_size(text)
