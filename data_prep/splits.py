"""Seeded, stratified, optionally patient-level assignment of samples to datalist roles.

One function serves every source. Strata are the class (optionally crossed with other columns,
e.g. SimBA's bias label); when a group column is given (patients), whole groups are assigned so
that no patient spans two roles. MONAI's ``partition_dataset_classes`` splits by ratios per class
but knows nothing of groups or exact counts, so the allocation is written here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

ROLE_ORDER = ("train", "teacher", "validation", "test", "test_ood")


def parse_teacher_size(value: str | float | int) -> float | int:
    """Read ``--teacher-size``: an integer count (``500``) or a fraction in (0, 1) (``0.1``).

    Raises:
        ValueError: not a positive integer nor a fraction in (0, 1).
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"teacher_size must be a count (e.g. 500) or a fraction in (0, 1) (e.g. 0.1), got {text!r}"
                ) from None
    if isinstance(value, bool):
        raise ValueError(f"teacher_size must be a count or a fraction, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"teacher_size must be >= 0 when given as a count, got {value}")
        return int(value)
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"teacher_size as a fraction must lie in (0, 1), got {value!r}; use an integer for a count")
    return float(value)


@dataclass(frozen=True)
class SplitSpec:
    """How a pool of samples is divided into roles.

    Args:
        val_fraction: share of the pool for ``validation`` (0 when the source provides it).
        test_fraction: share of the pool for ``test`` (0 when the source provides it).
        teacher_size: count (int) or fraction of the pool (float in (0, 1)) for ``teacher``.
        teacher_disjoint: teacher samples are removed from ``train`` (default); when False they
            are drawn from ``train`` and stay in it.
        seed: seed of the shuffles; the same seed and table give the same roles.

    Raises:
        ValueError: a fraction outside [0, 1), or the fractions and teacher share sum to >= 1.
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    teacher_size: float | int = 0.1
    teacher_disjoint: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        parse_teacher_size(self.teacher_size)
        teacher_share = self.teacher_size if isinstance(self.teacher_size, float) else 0.0
        if self.teacher_disjoint and self.val_fraction + self.test_fraction + teacher_share >= 1.0:
            raise ValueError(
                f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) + teacher_size "
                f"({self.teacher_size}) leave no training data; their sum must be < 1"
            )

    def targets(self, n: int) -> dict[str, int]:
        """Sample counts wanted per held-out role for a pool of ``n`` samples.

        Raises:
            ValueError: the requested counts do not fit in the pool (train would be empty).
        """
        teacher = self.teacher_size if isinstance(self.teacher_size, int) else round(self.teacher_size * n)
        wanted = {
            "test": round(self.test_fraction * n),
            "validation": round(self.val_fraction * n),
            "teacher": int(teacher),
        }
        held_out = wanted["test"] + wanted["validation"] + (wanted["teacher"] if self.teacher_disjoint else 0)
        if held_out >= n or (not self.teacher_disjoint and wanted["teacher"] > n - held_out):
            raise ValueError(
                f"teacher_size={self.teacher_size!r}, val_fraction={self.val_fraction}, "
                f"test_fraction={self.test_fraction} ask for {wanted} samples but the pool has only {n}; "
                "lower them so that some training data remains"
            )
        requested = {"test": self.test_fraction, "validation": self.val_fraction, "teacher": self.teacher_size}
        empty = [role for role, count in wanted.items() if count == 0 and requested[role]]
        if empty:
            smallest = max(math.ceil(0.5 / requested[r]) if isinstance(requested[r], float) else 1 for r in empty)
            raise ValueError(
                f"{n} samples are too few to fill every role: {', '.join(empty)} would get none "
                f"({', '.join(f'{r}: {requested[r]!r} of {n}' for r in empty)}); use at least {smallest} samples "
                "(e.g. --n), or set that role's fraction or size to 0 on purpose"
            )
        return wanted


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Split integer ``total`` in proportion to ``weights`` (exact sum, deterministic ties)."""
    raw = total * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _fill(groups: list, sizes: dict, need: int) -> tuple[list, list]:
    """Take groups in order while each one brings the running count closer to ``need``."""
    taken, rest = [], []
    for group in groups:
        size = sizes[group]
        if need > 0 and size <= 2 * need:
            taken.append(group)
            need -= size
        else:
            rest.append(group)
    return taken, rest


def assign_roles(
    table: pd.DataFrame,
    spec: SplitSpec,
    strata: Sequence[str] = ("label",),
    group: str | None = None,
    teacher_eligible: pd.Series | None = None,
) -> dict[str, list[int]]:
    """Assign every row of ``table`` to ``train``, ``teacher``, ``validation`` or ``test``.

    Args:
        table: one row per sample; must hold the ``strata`` columns (and ``group`` if given).
        spec: fractions, teacher size and seed.
        strata: columns whose value combinations are kept in proportion in every role.
        group: column of group ids (e.g. ``patient``) kept whole inside one role; a group's
            stratum is the largest of its rows' strata (a patient with any positive image
            counts as positive).
        teacher_eligible: boolean per row; the teacher is drawn only from eligible rows (e.g.
            bias-free SimBA volumes). Default: all rows.

    Returns:
        role -> sorted positional row indices. ``teacher`` may overlap ``train`` when
        ``spec.teacher_disjoint`` is False; the other roles are disjoint.

    Raises:
        ValueError: a column is missing, the table is empty, or the counts do not fit.
    """
    missing = [c for c in (*strata, *([group] if group else [])) if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} needed for the split are missing; table has {list(table.columns)}")
    n = len(table)
    if n == 0:
        raise ValueError("cannot split an empty table (no samples left)")
    targets = spec.targets(n)
    frame = table.reset_index(drop=True)
    eligible = (
        np.ones(n, dtype=bool) if teacher_eligible is None else np.asarray(teacher_eligible, dtype=bool)
    )
    group_ids = frame[group].astype(str).to_numpy() if group else np.char.zfill(np.arange(n).astype(str), 12)
    keys = frame[list(strata)].astype(str)
    stratum_of_row = keys.iloc[:, 0].str.cat([keys[c] for c in keys.columns[1:]], sep="|") if len(strata) > 1 \
        else keys.iloc[:, 0]
    codes, _ = pd.factorize(stratum_of_row, sort=True)  # integer codes in the order of the keys
    per_row = pd.DataFrame({"group": group_ids, "stratum": codes, "eligible": eligible})
    # A group's stratum: the largest stratum key among its rows (positives before negatives).
    per_group = per_row.groupby("group", sort=True).agg(
        stratum=("stratum", "max"), size=("stratum", "size"), eligible=("eligible", "all")
    )
    rows_of_group = {g: list(rows) for g, rows in per_row.groupby("group", sort=True).indices.items()}
    sizes = per_group["size"].to_dict()
    group_eligible = per_group["eligible"].to_dict()
    strata_keys = sorted(per_group["stratum"].unique())
    groups_of_stratum = {k: list(index) for k, index in per_group.groupby("stratum").groups.items()}
    stratum_sizes = np.array([per_group["size"][groups_of_stratum[k]].sum() for k in strata_keys])
    rng = np.random.default_rng(spec.seed)

    roles: dict[str, list[int]] = {role: [] for role in ("train", "teacher", "validation", "test")}
    remaining = {}
    for position, key in enumerate(strata_keys):
        groups = sorted(groups_of_stratum[key])
        groups = [groups[i] for i in rng.permutation(len(groups))]
        for role in ("test", "validation"):
            need = int(_largest_remainder(targets[role], stratum_sizes)[position])
            taken, groups = _fill(groups, sizes, need)
            roles[role].extend(r for g in taken for r in rows_of_group[g])
        remaining[key] = groups
    eligible_sizes = np.array(
        [sum(sizes[g] for g in remaining[k] if group_eligible[g]) for k in strata_keys], dtype=float
    )
    if targets["teacher"] > eligible_sizes.sum():
        raise ValueError(
            f"teacher_size={spec.teacher_size!r} asks for {targets['teacher']} samples but only "
            f"{int(eligible_sizes.sum())} eligible samples remain after the validation/test split"
        )
    teacher_needs = (
        _largest_remainder(targets["teacher"], eligible_sizes) if targets["teacher"] else np.zeros(len(strata_keys), int)
    )
    for position, key in enumerate(strata_keys):
        groups = remaining[key]
        teacher, _ = _fill([g for g in groups if group_eligible[g]], sizes, int(teacher_needs[position]))
        roles["teacher"].extend(r for g in teacher for r in rows_of_group[g])
        if spec.teacher_disjoint:
            chosen = set(teacher)
            groups = [g for g in groups if g not in chosen]
        roles["train"].extend(r for g in groups for r in rows_of_group[g])
    empty = [role for role in roles if not roles[role] and (role == "train" or targets.get(role))]
    if empty:
        raise ValueError(
            f"the split of {n} samples leaves {', '.join(empty)} empty (groups kept whole and classes kept in "
            "proportion need more samples); use more samples or lower the held-out fractions"
        )
    return {role: sorted(rows) for role, rows in roles.items()}
