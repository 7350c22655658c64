"""A held-out part of one datalist role, for checkpoint selection on data a method may use."""

from __future__ import annotations

import hashlib
from typing import Sequence


def _rank(seed: int, sample_id) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def split_holdout(items: Sequence[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split ``items`` into (fit, held_out): ``fraction`` of each label held out (at least one).

    The choice depends only on (seed, id), the label and the label's count, not on the order of
    ``items``: the same in every run and process.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a label with too few items to hold one out
            and keep one.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"holdout fraction must lie in (0, 1), got {fraction!r}")
    held_ids = set()
    for label in sorted({int(item["label"]) for item in items}):
        group = sorted((i for i in items if int(i["label"]) == label), key=lambda i: _rank(seed, i["id"]))
        count = max(1, int(round(fraction * len(group))))
        if not 0 < count < len(group):
            raise ValueError(
                f"holdout fraction {fraction} of the {len(group)} item(s) with label {label} holds out {count}; "
                "need at least one held out and one kept per label: give more items of that label "
                "(the teacher bundle sets the fraction with teacher_holdout)"
            )
        held_ids.update(str(i["id"]) for i in group[:count])
    fit = [i for i in items if str(i["id"]) not in held_ids]
    held = [i for i in items if str(i["id"]) in held_ids]
    return fit, held
