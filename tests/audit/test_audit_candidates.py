"""The candidate library: a generic grid, every candidate a working project transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.audit.candidates import (
    DIFFUSE_FAMILIES,
    LOCALIZED_FAMILIES,
    REGIONS,
    candidate_library,
    region_start,
)
from pipeline.transforms import build_artifact


def test_region_start_puts_outer_cells_against_the_border_and_centres_the_rest():
    shape, box = (64, 48), (8, 6)
    assert region_start("top_left", box, shape) == [0, 0]
    assert region_start("top", box, shape) == [0, 21]
    assert region_start("bottom_right", box, shape) == [56, 42]
    assert region_start("center", box, shape) == [28, 21]
    assert region_start("left", (8, 6, 4), (64, 48, 20)) == [28, 0, 8]  # depth centred
    with pytest.raises(ValueError, match="region 'middle' is unknown"):
        region_start("middle", box, shape)
    with pytest.raises(ValueError, match="does not fit"):
        region_start("top", (70, 6), shape)


def test_every_localized_family_covers_the_nine_regions_and_diffuse_ones_are_global():
    library = candidate_library((64, 64))
    names = [c.name for c in library]
    assert len(names) == len(set(names))
    for family in LOCALIZED_FAMILIES:
        regions = {c.region for c in library if c.family == family}
        assert regions == set(REGIONS), family
        assert {c.kind for c in library if c.family == family} == {"localized"}
    for family in DIFFUSE_FAMILIES:
        members = [c for c in library if c.family == family]
        assert members and all(c.kind == "diffuse" and c.region == "global" for c in members)
    assert [c.family for c in candidate_library((64, 64), ["noise"])] == ["noise"] * 3
    with pytest.raises(ValueError, match="unknown candidate families"):
        candidate_library((64, 64), ["sticker"])


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_every_candidate_builds_and_changes_the_image(shape):
    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.uniform(0.2, 0.8, (1, *shape)), dtype=torch.float32)
    for candidate in candidate_library(shape):
        artifact = build_artifact(candidate.artifact)
        changed = torch.as_tensor(artifact(image)) != image
        assert changed.any(), candidate.name
        if candidate.kind == "localized":  # only pixels in the candidate's third of the image change
            row, col = divmod(REGIONS.index(candidate.region), 3)
            outside = changed.clone()
            rows = np.array_split(np.arange(shape[0]), 3)[row]
            cols = np.array_split(np.arange(shape[1]), 3)[col]
            outside[:, max(rows[0] - 2, 0) : rows[-1] + 3, max(cols[0] - 2, 0) : cols[-1] + 3] = False
            assert not outside.any(), candidate.name
