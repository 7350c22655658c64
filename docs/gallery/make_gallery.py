"""Render every shortcut artifact on a synthetic 2D chest image and a synthetic 3D head volume.

Usage: ``python docs/gallery/make_gallery.py [output.png]`` (default: docs/gallery/artifacts.png).
Each artifact gets two panels: the 2D image and the middle depth slice of the 3D volume. Localized
artifacts show their region as a dashed outline.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from skimage.draw import ellipse, ellipse_perimeter  # noqa: E402
from skimage.filters import gaussian  # noqa: E402

import pipeline.transforms as T  # noqa: E402

ARTIFACTS = [
    ("PatchArtifact", T.PatchArtifact(size=0.08, position="top_left", margin=8)),
    ("DiscArtifact", T.DiscArtifact(size=0.1, position="top_right", margin=8)),
    ("TextTagArtifact 'L'", T.TextTagArtifact(text="L", size=0.15, position="top_right", margin=24)),
    ("RulerArtifact", T.RulerArtifact(size=[0.06, 0.6], period=6, position="bottom_left", margin=6)),
    ("LocalIntensityArtifact", T.LocalIntensityArtifact(size=0.3, intensity=0.4, position="centre")),
    ("LocalDeformationArtifact +0.25", T.LocalDeformationArtifact(magnitude=0.25, size=0.5, position="centre")),
    ("GaussianNoiseArtifact std 0.08", T.GaussianNoiseArtifact(std=0.08)),
    ("RicianNoiseArtifact std 0.1", T.RicianNoiseArtifact(std=0.1)),
    ("ContrastArtifact x1.5 (mean)", T.ContrastArtifact(factor=1.5, pivot="mean")),
    ("IntensityShiftArtifact +0.3", T.IntensityShiftArtifact(offset=0.3)),
    ("GammaArtifact 2.0", T.GammaArtifact(gamma=2.0)),
    ("BlurArtifact sigma 2", T.BlurArtifact(sigma=2.0)),
    ("BiasFieldArtifact", T.BiasFieldArtifact(degree=3, coeff_range=[0.2, 0.4])),
]


def chest_image(n: int = 256) -> np.ndarray:
    """A smooth thorax-like radiograph (1, n, n) in [0, 1]: body, lungs, heart, spine, ribs."""
    img = np.zeros((n, n))
    img[ellipse(n * 0.55, n * 0.5, n * 0.42, n * 0.46, shape=img.shape)] = 0.55
    for col in (0.3, 0.7):
        img[ellipse(n * 0.5, n * col, n * 0.3, n * 0.15, shape=img.shape)] = 0.15
    img[ellipse(n * 0.62, n * 0.56, n * 0.14, n * 0.12, shape=img.shape)] = 0.65
    img[int(n * 0.12) : int(n * 0.95), int(n * 0.47) : int(n * 0.53)] = 0.85
    for k in range(7):
        for col in (0.3, 0.7):
            rr, cc = ellipse_perimeter(int(n * (0.28 + 0.075 * k)), int(n * col), int(n * 0.05), int(n * 0.17),
                                       shape=img.shape)
            img[rr, cc] = np.maximum(img[rr, cc], 0.75)
    return gaussian(img, sigma=n / 200)[None].astype(np.float32)


def head_volume(n: int = 96) -> np.ndarray:
    """A smooth head-like volume (1, n, n, n) in [0, 1]: skull shell, brain, ventricles."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")

    def inside(radii, centre=(0.0, 0.0, 0.0)):
        return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1

    vol = np.zeros((n, n, n))
    vol[inside((0.9, 0.75, 0.8))] = 0.9
    vol[inside((0.82, 0.67, 0.72))] = 0.55
    for side in (-0.15, 0.15):
        vol[inside((0.3, 0.08, 0.2), centre=(0.0, side, 0.0))] = 0.2
    vol += 0.08 * np.sin(6 * grid[0]) * np.cos(5 * grid[1]) * (vol > 0.4)
    return gaussian(vol, sigma=n / 150)[None].astype(np.float32)


def outline(ax, artifact, img):
    """Dashed outline of a localized artifact's region on the displayed slice."""
    if isinstance(artifact, T.LocalizedArtifact):
        index = artifact.region_of(img)
        rows, cols = index[1], index[2]
        ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start, rows.stop - rows.start,
                               fill=False, edgecolor="tab:red", linestyle="--", linewidth=0.8))


def main(output: str = str(Path(__file__).with_name("artifacts.png"))) -> None:
    images = {"2D": chest_image(), "3D": head_volume()}
    entries = [("clean", None)] + ARTIFACTS
    per_row = 2
    fig, axes = plt.subplots(
        int(np.ceil(len(entries) / per_row)), 2 * per_row, figsize=(4 * per_row * 1.6, 1.75 * len(entries))
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, (title, artifact) in enumerate(entries):
        for j, (kind, img) in enumerate(images.items()):
            out = img if artifact is None else artifact.set_random_state(seed=0)(img)
            shown = out[0] if kind == "2D" else out[0, :, :, out.shape[-1] // 2]
            ax = axes[i // per_row, 2 * (i % per_row) + j]
            ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.2, interpolation="nearest")
            ax.set_title(f"{title}\n{kind}" if kind == "2D" else f"\n{kind} (middle slice)", fontsize=8)
            if artifact is not None:
                outline(ax, artifact, img)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(output))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, output)
    plt.close(fig)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
