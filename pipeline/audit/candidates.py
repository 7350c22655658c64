"""The candidate shortcuts a scan tries: a generic grid built from the project's own transforms.

Nothing here knows a scenario's artifact. Localized candidates (:data:`LOCALIZED_FAMILIES`:
patches, text tags, lines, local deformations) are placed at each cell of a 3x3 grid over the
first two spatial axes (:data:`REGIONS`) and, in a volume, at each third of the third axis
(:data:`DEPTHS`: a 3x3x3 grid; ``depth_cells=1`` centres them in depth instead), in a few sizes
(fractions of the smaller in-plane side) and intensities; diffuse ones (:data:`DIFFUSE_FAMILIES`)
change the whole image (noise levels, contrast, gamma, blur, bias field) and have the region
``global``. Each candidate is a transform config
(:func:`pipeline.transforms.build_artifact`), so a suspected artifact and a candidate are applied
by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

REGIONS = ("top_left", "top", "top_right", "left", "center", "right", "bottom_left", "bottom", "bottom_right")
"""The 3x3 grid of regions, row by row ("top" = index 0 of the first spatial axis)."""
DEPTHS = ("front", "middle", "back")
"""Thirds of a volume's third spatial axis ("front" = index 0)."""
GLOBAL = "global"
KINDS = ("localized", "diffuse")

PATCH_SIZES = (1 / 16, 1 / 8, 1 / 4)
"""Patch sides as fractions of the smaller in-plane side (4, 8 and 16 pixels at 64)."""
BRIGHT, DARK = 1.0, 0.0
"""Painted values relative to each image's range: its maximum and its minimum."""
TEXT_SIZES = (1 / 8, 1 / 4)
TEXT = "L"
LINE_LENGTH, LINE_THICKNESS = 1 / 3, 1 / 32
DEFORMATION_SIZE, DEFORMATION_MAGNITUDES = 1 / 3, (0.25, -0.25)
NOISE_STDS = (0.01, 0.03, 0.1)
CONTRAST_FACTORS = (0.8, 1.25)
GAMMAS = (0.7, 1.5)
BLUR_SIGMAS = (0.5, 1.5)
BIAS_FIELD_COEFFS = (0.2, 0.5)

LOCALIZED_FAMILIES = ("patch", "text", "line", "deformation")
DIFFUSE_FAMILIES = ("noise", "contrast", "gamma", "blur", "bias_field")


@dataclass(frozen=True)
class Candidate:
    """One candidate shortcut.

    Attributes:
        name: unique, readable (``patch_8px_bright@top_left``).
        kind: ``localized`` or ``diffuse``.
        family: the candidate family (:data:`LOCALIZED_FAMILIES`, :data:`DIFFUSE_FAMILIES`).
        region: a name of :data:`REGIONS`, or ``global``.
        depth: a name of :data:`DEPTHS` for a localized candidate of a 3x3x3 grid, else None
            (2D, diffuse, or centred in depth with ``depth_cells=1``).
        params: the family's parameters, for the report.
        artifact: the transform config (``_target_`` and keyword arguments).
    """

    name: str
    kind: str
    family: str
    region: str
    depth: str | None = None
    params: dict = field(default_factory=dict)
    artifact: dict = field(default_factory=dict)


def region_start(region: str, box: Sequence[int], shape: Sequence[int], depth: str = "middle") -> list[int]:
    """Start corner of ``box`` in the cell ``region`` of an image of spatial ``shape``: against the
    border for the outer cells, centred for the middle ones; in a volume, the same along the third
    axis for ``depth`` (:data:`DEPTHS`).

    Raises:
        ValueError: for an unknown region or depth, or a box larger than the image.
    """
    if region not in REGIONS:
        raise ValueError(f"region {region!r} is unknown; use one of {list(REGIONS)}")
    if depth not in DEPTHS:
        raise ValueError(f"depth {depth!r} is unknown; use one of {list(DEPTHS)}")
    if len(box) != len(shape) or any(b > n for b, n in zip(box, shape)):
        raise ValueError(f"box {list(box)} does not fit an image of spatial shape {list(shape)}")
    cells = (*divmod(REGIONS.index(region), 3), DEPTHS.index(depth))
    return [(0, (n - b) // 2, n - b)[cell] for cell, b, n in zip(cells, box, shape)]


def _pixels(fraction: float, side: int, least: int = 1) -> int:
    return max(least, int(round(fraction * side)))


def _box(in_plane: Sequence[int], shape: Sequence[int]) -> list[int]:
    """An in-plane box; on a volume a slab as thick as its smaller in-plane side (as the transforms do)."""
    box = list(in_plane)
    return box + [min(min(box), shape[2])] if len(shape) == 3 else box


def _localized(
    family: str, label: str, target: str, box: list[int], shape, params: dict, depths, **options
) -> list[Candidate]:
    out = []
    for depth in depths:
        for region in REGIONS:
            position = region_start(region, box, shape, depth or "middle")
            artifact = {"_target_": target, "size": box, "position": position, **options}
            name = f"{family}_{label}@{region}" + (f"/{depth}" if depth else "")
            out.append(Candidate(name, "localized", family, region, depth, dict(params), artifact))
    return out


def candidate_library(
    spatial_shape: Sequence[int], families: Sequence[str] | None = None, depth_cells: int = 3
) -> list[Candidate]:
    """Every candidate for images of ``spatial_shape`` ((H, W) or (H, W, D)), in a fixed order.

    Args:
        spatial_shape: the network's input size.
        families: keep only these families (default: all of :data:`LOCALIZED_FAMILIES` and
            :data:`DIFFUSE_FAMILIES`).
        depth_cells: for a volume, 3 places each localized candidate in every third of the third
            axis (names end in ``/front``, ``/middle``, ``/back``), 1 centred in depth (a third of
            the localized candidates; names without a depth). Ignored in 2D.

    Raises:
        ValueError: for a shape that is not 2D or 3D, an unknown family or a depth_cells not 1 or 3.
    """
    if depth_cells not in (1, 3):
        raise ValueError(
            f"depth_cells (--depth-cells, bundle audit_depth_cells) must be 1 or 3, got {depth_cells!r}"
        )
    shape = [int(s) for s in spatial_shape]
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(
            f"spatial_shape must be (H, W) or (H, W, D) of at least 4 pixels, got {list(spatial_shape)}"
        )
    known = LOCALIZED_FAMILIES + DIFFUSE_FAMILIES
    wanted = known if families is None else tuple(families)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown candidate families {unknown}; known: {list(known)}")
    side = min(shape[:2])
    depths = DEPTHS if len(shape) == 3 and depth_cells == 3 else (None,)  # None: centred in depth
    out: list[Candidate] = []
    if "patch" in wanted:
        for fraction in PATCH_SIZES:
            pixels = _pixels(fraction, side)
            for tone, value in (("bright", BRIGHT), ("dark", DARK)):
                params = {"size_px": pixels, "intensity": value}
                out += _localized("patch", f"{pixels}px_{tone}", "PatchArtifact", _box([pixels] * 2, shape),
                                  shape, params, depths, intensity=value)  # fmt: skip
    if "text" in wanted:
        for fraction in TEXT_SIZES:
            pixels = _pixels(fraction, side, least=7)  # the 5x7 font needs 7 rows
            params = {"size_px": pixels, "text": TEXT, "intensity": BRIGHT}
            out += _localized("text", f"{pixels}px", "TextTagArtifact", _box([pixels] * 2, shape), shape, params,
                              depths, text=TEXT, intensity=BRIGHT)  # fmt: skip
    if "line" in wanted:
        length, thickness = _pixels(LINE_LENGTH, side), _pixels(LINE_THICKNESS, side)
        for tone, value in (("bright", BRIGHT), ("dark", DARK)):
            params = {"length_px": length, "thickness_px": thickness, "intensity": value}
            out += _localized("line", f"{length}px_{tone}", "PatchArtifact", _box([thickness, length], shape),
                              shape, params, depths, intensity=value)  # fmt: skip
    if "deformation" in wanted:
        pixels = _pixels(DEFORMATION_SIZE, side)
        for magnitude in DEFORMATION_MAGNITUDES:
            label = f"{pixels}px_{'expand' if magnitude > 0 else 'shrink'}"
            out += _localized("deformation", label, "LocalDeformationArtifact", [pixels] * len(shape), shape,
                              {"size_px": pixels, "magnitude": magnitude}, depths, magnitude=magnitude)  # fmt: skip
    diffuse: list[tuple[str, str, dict, dict]] = []
    if "noise" in wanted:
        diffuse += [
            ("noise", f"std{s:g}", {"std": s}, {"_target_": "GaussianNoiseArtifact", "std": s})
            for s in NOISE_STDS
        ]
    if "contrast" in wanted:
        diffuse += [("contrast", f"x{f:g}", {"factor": f}, {"_target_": "ContrastArtifact", "factor": f})
                    for f in CONTRAST_FACTORS]  # fmt: skip
    if "gamma" in wanted:
        diffuse += [
            ("gamma", f"{g:g}", {"gamma": g}, {"_target_": "GammaArtifact", "gamma": g}) for g in GAMMAS
        ]
    if "blur" in wanted:
        diffuse += [
            ("blur", f"sigma{s:g}", {"sigma": s}, {"_target_": "BlurArtifact", "sigma": s})
            for s in BLUR_SIGMAS
        ]
    if "bias_field" in wanted:
        diffuse += [("bias_field", f"{c:g}", {"coeff_range": [0.0, c]},
                     {"_target_": "BiasFieldArtifact", "coeff_range": [0.0, c]}) for c in BIAS_FIELD_COEFFS]  # fmt: skip
    for family, label, params, artifact in diffuse:
        out.append(Candidate(f"{family}_{label}", "diffuse", family, GLOBAL, None, params, artifact))
    return out


def describe(candidate: Candidate) -> dict[str, Any]:
    """The candidate's fields for the report (without the transform config)."""
    return {"name": candidate.name, "kind": candidate.kind, "family": candidate.family,
            "region": candidate.region, "depth": candidate.depth, "params": dict(candidate.params)}  # fmt: skip
