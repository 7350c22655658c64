"""Localized artifacts change only the pixels inside their region, and the right ones inside it."""

import numpy as np
import pytest
from artifact_cases import smooth_image

import pipeline.transforms as T
from pipeline.transforms.font import text_bitmap

LOCALIZED = [
    T.PatchArtifact,
    T.DiscArtifact,
    T.TextTagArtifact,
    T.RulerArtifact,
    T.LocalIntensityArtifact,
    T.LocalDeformationArtifact,
]


def changed(out, img):
    return np.asarray(out) != np.asarray(img)


def expected_box(ndim, size, position, margin=0):
    """Index of the box computed by hand for a 32x32 or 16x16x16 image."""
    shape = (32, 32) if ndim == 2 else (16, 16, 16)
    size = tuple(size) + ((min(size),) if ndim == 3 and len(size) == 2 else ())
    starts = {
        "top_left": (margin, margin),
        "top_right": (margin, shape[1] - size[1] - margin),
        "bottom_left": (shape[0] - size[0] - margin, margin),
        "bottom_right": (shape[0] - size[0] - margin, shape[1] - size[1] - margin),
        "centre": ((shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2),
    }
    start = starts[position] if isinstance(position, str) else tuple(position)
    if ndim == 3 and len(start) == 2:
        start = start + ((shape[2] - size[2]) // 2,)
    return (slice(None),) + tuple(slice(s, s + b) for s, b in zip(start, size))


CASES = [
    ({"size": [10, 12], "position": "top_left", "margin": 2}, "top_left", 2),
    ({"size": [10, 12], "position": "top_right", "margin": 1}, "top_right", 1),
    ({"size": [10, 12], "position": "bottom_left"}, "bottom_left", 0),
    ({"size": [10, 12], "position": "bottom_right", "margin": 3}, "bottom_right", 3),
    ({"size": [10, 12], "position": "center"}, "centre", 0),
    ({"size": [10, 12], "position": [1, 3]}, (1, 3), 0),
]


@pytest.mark.parametrize("ndim", (2, 3))
@pytest.mark.parametrize("cls", LOCALIZED, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs, position, margin", CASES)
def test_only_the_region_changes(cls, ndim, kwargs, position, margin):
    img = smooth_image(ndim)
    out = cls(**kwargs)(img)
    inside = np.zeros(img.shape, dtype=bool)
    inside[expected_box(ndim, kwargs["size"], position, margin)] = True
    diff = changed(out, img)
    assert not diff[~inside].any(), "a pixel outside the region changed"
    assert diff[inside].any(), "nothing inside the region changed"


def test_fraction_size_and_3d_explicit_coordinates():
    img = smooth_image(3)
    out = T.PatchArtifact(size=[0.25, 0.5, 0.125], position=[0, 8, 14])(img)
    inside = np.zeros(img.shape, dtype=bool)
    inside[:, 0:4, 8:16, 14:16] = True
    np.testing.assert_array_equal(changed(out, img), inside)


def test_random_position_stays_in_region_and_varies():
    img = smooth_image(2)
    artifact = T.PatchArtifact(size=4, position="random", region=[[0.5, 1.0], [4, 20]], margin=1)
    starts = set()
    for seed in range(30):
        diff = changed(artifact.set_random_state(seed=seed)(img), img)
        rows, cols = np.nonzero(diff[0])
        assert rows.min() >= 16 and rows.max() <= 30 and cols.min() >= 4 and cols.max() <= 19
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
        starts.add((rows.min(), cols.min()))
    assert len(starts) > 10


@pytest.mark.parametrize("ndim", (2, 3))
def test_region_of_is_the_box_the_artifact_used(ndim):
    img = smooth_image(ndim)
    artifact = T.PatchArtifact(size=[3, 5], position="random")
    for seed in range(5):
        out = artifact.set_random_state(seed=seed)(img)
        inside = np.zeros(img.shape, dtype=bool)
        inside[artifact.set_random_state(seed=seed).region_of(img)] = True
        np.testing.assert_array_equal(changed(out, img), inside)


def test_patch_intensity_modes_and_blends():
    img = smooth_image(2)
    vmin, vmax = img.min(), img.max()
    box = (slice(None), slice(0, 5), slice(0, 5))
    relative = T.PatchArtifact(size=5, intensity=0.25)(img)
    np.testing.assert_allclose(relative[box], vmin + 0.25 * (vmax - vmin), rtol=1e-6)
    absolute = T.PatchArtifact(size=5, intensity=-2.0, intensity_mode="absolute")(img)
    np.testing.assert_allclose(absolute[box], -2.0)
    added = T.PatchArtifact(size=5, intensity=0.5, blend="add")(img)
    np.testing.assert_allclose(added[box] - img[box], 0.5 * (vmax - vmin), rtol=1e-5)


@pytest.mark.parametrize("ndim", (2, 3))
def test_disc_is_inscribed_in_its_box(ndim):
    img = np.zeros((1,) + ((32, 32) if ndim == 2 else (16, 16, 16)), dtype=np.float32)
    out = T.DiscArtifact(size=9, position="centre", intensity=1.0, intensity_mode="absolute")(img)
    mask = out[0] == 1.0
    centre = (4,) * ndim
    box = mask[tuple(slice(s, s + 9) for s in ((11, 11) if ndim == 2 else (3, 3, 3)))]
    assert box[centre] and box[(0,) * ndim] == 0 and box[(8,) * ndim] == 0  # centre in, corners out
    assert box[(0,) + (4,) * (ndim - 1)]  # touches the box's edges
    expected = (4 / 3 * np.pi if ndim == 3 else np.pi) * 4.5**ndim
    assert abs(mask.sum() - expected) / expected < 0.15


def trimmed(mask):
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


@pytest.mark.parametrize("text, size, scale", [("L", [14, 11], 2), ("R1", [7, 11], 1), ("ab", [21, 40], 3)])
def test_text_tag_draws_the_scaled_glyphs(text, size, scale):
    img = np.zeros((1, 32, 48), dtype=np.float32)
    out = T.TextTagArtifact(text=text, size=size, intensity=1.0, intensity_mode="absolute")(img)
    glyphs = np.kron(text_bitmap(text), np.ones((scale, scale), dtype=bool))
    np.testing.assert_array_equal(trimmed(out[0] > 0), trimmed(glyphs))
    rows, cols = np.nonzero(out[0])
    assert rows.max() < size[0] and cols.max() < size[1]


def test_text_tag_fills_a_slab_in_3d():
    img = np.zeros((1, 16, 16, 16), dtype=np.float32)
    out = T.TextTagArtifact(text="L", size=[7, 5, 4], intensity=1.0, intensity_mode="absolute")(img)
    slices_with_text = np.nonzero(out[0].any(axis=(0, 1)))[0]
    np.testing.assert_array_equal(slices_with_text, [6, 7, 8, 9])
    for k in slices_with_text:
        np.testing.assert_array_equal(out[0, :7, :5, k] > 0, text_bitmap("L"))


@pytest.mark.parametrize("orientation, size", [("horizontal", [4, 20]), ("vertical", [20, 4]), ("auto", [20, 4])])
def test_ruler_has_bar_and_ticks(orientation, size):
    img = np.zeros((1, 32, 32), dtype=np.float32)
    ruler = T.RulerArtifact(size=size, period=4, intensity=1.0, tick_intensity=0.5, orientation=orientation,
                            intensity_mode="absolute", position="top_left")
    out = ruler(img)[0, : size[0], : size[1]]
    assert set(np.unique(out)) == {0.5, 1.0}
    ticks = out == 0.5
    edge = ticks[0] if orientation == "horizontal" else ticks[:, 0]
    np.testing.assert_array_equal(np.nonzero(edge)[0], [2, 6, 10, 14, 18])  # one pixel wide, every 4 from 2
    assert ticks.sum() < out.size / 2


def test_local_intensity_is_soft_and_peaks_at_the_centre():
    img = np.zeros((1, 32, 32), dtype=np.float32)
    out = T.LocalIntensityArtifact(size=16, intensity=2.0, intensity_mode="absolute", softness=0.5)(img)[0]
    assert out[15:17, 15:17].max() == pytest.approx(2.0)
    edge = out[16, 8:12]
    assert np.all(np.diff(edge) >= 0) and 0 < edge[1] < 2.0  # raised-cosine ramp towards the centre
    hard = T.LocalIntensityArtifact(size=16, intensity=2.0, intensity_mode="absolute", softness=0.0)(img)[0]
    assert set(np.unique(hard)) == {0.0, 2.0}


@pytest.mark.parametrize("ndim", (2, 3))
def test_local_deformation_expands_and_shrinks_a_blob(ndim):
    shape = (32, 32) if ndim == 2 else (16, 16, 16)
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    blob = (1 / (1 + np.exp(radius - shape[0] / 8)))[None].astype(np.float32)
    area = (blob > 0.5).sum()
    grow = T.LocalDeformationArtifact(magnitude=0.25, size=0.75, position="centre")(blob)
    shrink = T.LocalDeformationArtifact(magnitude=-0.25, size=0.75, position="centre")(blob)
    assert (grow > 0.5).sum() > area > (shrink > 0.5).sum()
    identity = T.LocalDeformationArtifact(magnitude=0.0, size=0.75)(blob)
    np.testing.assert_allclose(identity, blob, atol=1e-6)
