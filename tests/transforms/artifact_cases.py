"""Every artifact with parameters that fit the small test images (1x32x32 and 1x16x16x16)."""

import numpy as np

import pipeline.transforms as T

LOCALIZED = {
    "patch": (T.PatchArtifact, T.PatchArtifactd, {"size": 6, "position": "top_right", "margin": 1}),
    "disc": (T.DiscArtifact, T.DiscArtifactd, {"size": 7, "position": "bottom_left"}),
    "text": (T.TextTagArtifact, T.TextTagArtifactd, {"text": "R", "size": [8, 7], "position": "top_left"}),
    "ruler": (T.RulerArtifact, T.RulerArtifactd, {"size": [3, 12], "period": 3, "position": [2, 1]}),
    "local_intensity": (T.LocalIntensityArtifact, T.LocalIntensityArtifactd, {"size": 8, "intensity": 0.5}),
    "local_deformation": (T.LocalDeformationArtifact, T.LocalDeformationArtifactd, {"size": 10, "magnitude": 0.25}),
    "random_patch": (T.PatchArtifact, T.PatchArtifactd, {"size": 4, "position": "random", "region": [[0, 12], [4, 16]]}),
}
DIFFUSE = {
    "gaussian_noise": (T.GaussianNoiseArtifact, T.GaussianNoiseArtifactd, {"std": 0.2}),
    "rician_noise": (T.RicianNoiseArtifact, T.RicianNoiseArtifactd, {"std": 0.2}),
    "contrast": (T.ContrastArtifact, T.ContrastArtifactd, {"factor": 1.5}),
    "shift": (T.IntensityShiftArtifact, T.IntensityShiftArtifactd, {"offset": 2.0}),
    "gamma": (T.GammaArtifact, T.GammaArtifactd, {"gamma": 2.0}),
    "blur": (T.BlurArtifact, T.BlurArtifactd, {"sigma": 1.0}),
    "bias_field": (T.BiasFieldArtifact, T.BiasFieldArtifactd, {"coeff_range": [0.2, 0.5]}),
}
ALL = {**LOCALIZED, **DIFFUSE}
RANDOM = ("random_patch", "gaussian_noise", "rician_noise", "bias_field")


def smooth_image(ndim: int, seed: int = 0) -> np.ndarray:
    """A smooth, non-constant float32 image (1, 32, 32) or (1, 16, 16, 16) with values in [0, 1]."""
    shape = (32, 32) if ndim == 2 else (16, 16, 16)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=len(shape))
    img = np.prod([0.5 + 0.5 * np.sin(3 * g + p) for g, p in zip(grids, phase)], axis=0)
    img = 0.1 + 0.8 * (img - img.min()) / (img.max() - img.min())
    return img[None].astype(np.float32)
