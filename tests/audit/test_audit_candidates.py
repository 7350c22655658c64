"""The candidate library: a generic grid, every candidate a working project transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.audit.candidates import (
    DEPTHS,
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
    assert region_start("left", (8, 6, 4), (64, 48, 20)) == [28, 0, 8]  # depth centred by default
    assert region_start("left", (8, 6, 4), (64, 48, 20), "front") == [28, 0, 0]
    assert region_start("top_right", (8, 6, 4), (64, 48, 20), "back") == [0, 42, 16]
    with pytest.raises(ValueError, match="depth 'deep' is unknown"):
        region_start("top", (8, 6, 4), (64, 48, 20), "deep")
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
            cells = divmod(REGIONS.index(candidate.region), 3)
            if len(shape) == 3:
                cells += (DEPTHS.index(candidate.depth),)
            outside = changed.clone()
            inside = [slice(None)]
            for cell, n in zip(cells, shape):
                third = np.array_split(np.arange(n), 3)[cell]
                inside.append(slice(max(third[0] - 2, 0), third[-1] + 3))
            outside[tuple(inside)] = False
            assert not outside.any(), candidate.name


def test_a_volume_gets_a_3x3x3_grid_of_localized_candidates_or_a_centred_one():
    """depth_cells=3 (default): every localized mark at the 27 cells, named region/depth;
    depth_cells=1: the nine in-plane cells centred in depth, names and depth as a 2D grid's."""
    grid = candidate_library((16, 16, 16))
    centred = candidate_library((16, 16, 16), depth_cells=1)
    localized = [c for c in grid if c.kind == "localized"]
    assert len(localized) == 3 * sum(c.kind == "localized" for c in centred)
    marks = {c.name.split("@")[0] for c in localized}
    for mark in marks:
        cells = {(c.region, c.depth) for c in localized if c.name.startswith(mark + "@")}
        assert cells == {(r, d) for r in REGIONS for d in DEPTHS}, mark
    assert all(c.name.endswith("/" + c.depth) for c in localized)
    assert all(c.depth is None and "/" not in c.name for c in centred)
    assert {c.name for c in grid if c.kind == "diffuse"} == {c.name for c in centred if c.kind == "diffuse"}
    assert all(c.depth is None for c in candidate_library((32, 32)))
    back = next(c for c in localized if c.family == "deformation" and c.region == "center" and c.depth == "back")
    assert back.artifact["position"] == [5, 5, 11]  # a 5-voxel box against the far end of 16
    with pytest.raises(ValueError, match=r"depth_cells \(--depth-cells, bundle audit_depth_cells\) must be 1 or 3, got 2"):
        candidate_library((16, 16, 16), depth_cells=2)
