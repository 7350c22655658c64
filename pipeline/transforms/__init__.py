"""Shortcut artifact transforms: localized and diffuse artifacts and label-conditioned injection.

Every artifact is an array transform with a dictionary twin (``Foo`` / ``Food``), works on 2D
(C, H, W) and 3D (C, H, W, D) numpy arrays, tensors and MetaTensors, and keeps type, dtype, device
and metadata. See docs/artifacts.md.
"""

from pipeline.transforms.base import Artifact, ArtifactDict
from pipeline.transforms.diffuse import (
    BiasFieldArtifact,
    BiasFieldArtifactd,
    BlurArtifact,
    BlurArtifactd,
    ContrastArtifact,
    ContrastArtifactd,
    DiffuseArtifact,
    GammaArtifact,
    GammaArtifactd,
    GaussianNoiseArtifact,
    GaussianNoiseArtifactd,
    IntensityShiftArtifact,
    IntensityShiftArtifactd,
    RicianNoiseArtifact,
    RicianNoiseArtifactd,
)
from pipeline.transforms.injection import MODES, ShortcutInjection, ShortcutInjectiond, build_artifact
from pipeline.transforms.localized import (
    DiscArtifact,
    DiscArtifactd,
    LocalDeformationArtifact,
    LocalDeformationArtifactd,
    LocalIntensityArtifact,
    LocalIntensityArtifactd,
    LocalizedArtifact,
    PatchArtifact,
    PatchArtifactd,
    RulerArtifact,
    RulerArtifactd,
    TextTagArtifact,
    TextTagArtifactd,
)

__all__ = [
    "Artifact",
    "ArtifactDict",
    "BiasFieldArtifact",
    "BiasFieldArtifactd",
    "BlurArtifact",
    "BlurArtifactd",
    "ContrastArtifact",
    "ContrastArtifactd",
    "DiffuseArtifact",
    "DiscArtifact",
    "DiscArtifactd",
    "GammaArtifact",
    "GammaArtifactd",
    "GaussianNoiseArtifact",
    "GaussianNoiseArtifactd",
    "IntensityShiftArtifact",
    "IntensityShiftArtifactd",
    "LocalDeformationArtifact",
    "LocalDeformationArtifactd",
    "LocalIntensityArtifact",
    "LocalIntensityArtifactd",
    "LocalizedArtifact",
    "MODES",
    "PatchArtifact",
    "PatchArtifactd",
    "RicianNoiseArtifact",
    "RicianNoiseArtifactd",
    "RulerArtifact",
    "RulerArtifactd",
    "ShortcutInjection",
    "ShortcutInjectiond",
    "TextTagArtifact",
    "TextTagArtifactd",
    "build_artifact",
]
