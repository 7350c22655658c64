"""Bad parameters raise ValueError naming the parameter, the value and what is allowed."""

import numpy as np
import pytest
import torch

import pipeline.transforms as T

IMG = np.zeros((1, 32, 32), dtype=np.float32)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: T.PatchArtifact(size=-3), r"size must be positive, got -3"),
        (lambda: T.PatchArtifact(size=0.0), r"size must be positive"),
        (lambda: T.PatchArtifact(size=[4, -1]), r"size must be positive, got -1"),
        (lambda: T.PatchArtifact(size=2.5), r"size .* fraction .* up to 1\.0; got 2\.5"),
        (lambda: T.PatchArtifact(size=[1, 2, 3, 4]), r"size must be a scalar or have 2 .* or 3"),
        (lambda: T.PatchArtifact(size="big"), r"size must be a number"),
        (lambda: T.PatchArtifact(position="upper_left"), r"position='upper_left' is unknown; use one of .*top_left"),
        (lambda: T.PatchArtifact(position=[1.5, 2]), r"position=\[1\.5, 2\] is not valid"),
        (lambda: T.PatchArtifact(position=[-1, 2]), r"position=\[-1, 2\]"),
        (lambda: T.PatchArtifact(margin=-1), r"margin must be a non-negative integer .* got -1"),
        (lambda: T.PatchArtifact(region=[[5, 2], [0, 4]]), r"region=.* 0 <= start < stop"),
        (lambda: T.PatchArtifact(region=[[0, 1.5], [0, 4]]), r"region="),
        (lambda: T.PatchArtifact(intensity=float("nan")), r"intensity must be a finite number"),
        (lambda: T.PatchArtifact(intensity_mode="percent"), r"intensity_mode='percent' is unknown; .*relative"),
        (lambda: T.PatchArtifact(blend="multiply"), r"blend='multiply' is unknown; .*'add'"),
        (lambda: T.TextTagArtifact(text="é"), r"text='é' has characters without a glyph"),
        (lambda: T.TextTagArtifact(text=""), r"text must be a non-empty string"),
        (lambda: T.RulerArtifact(period=1), r"period must be an integer >= 2 .* got 1"),
        (lambda: T.RulerArtifact(orientation="diagonal"), r"orientation='diagonal' is unknown"),
        (lambda: T.LocalIntensityArtifact(softness=1.5), r"softness must be a finite number in \[0\.0, 1\.0\], got 1\.5"),
        (lambda: T.LocalDeformationArtifact(magnitude=0.5), r"magnitude must be .* \[-0\.25, 0\.25\], got 0\.5"),
        (lambda: T.GaussianNoiseArtifact(std=-0.1), r"std must be a finite number in \[0\.0, inf\], got -0\.1"),
        (lambda: T.RicianNoiseArtifact(std=float("inf")), r"std must be a finite number"),
        (lambda: T.ContrastArtifact(factor=0), r"factor must be positive, got 0"),
        (lambda: T.ContrastArtifact(pivot="mode"), r"pivot='mode' is unknown; use 'mean', 'median' or a number"),
        (lambda: T.IntensityShiftArtifact(offset="x"), r"offset must be a number, got 'x'"),
        (lambda: T.GammaArtifact(gamma=0.0), r"gamma must be positive, got 0\.0"),
        (lambda: T.BlurArtifact(sigma=[1.0, 0.0]), r"sigma must be positive .* got \[1\.0, 0\.0\]"),
        (lambda: T.BiasFieldArtifact(degree=0), r"degree must be an integer >= 1, got 0"),
        (lambda: T.BiasFieldArtifact(coeff_range=[0.3, 0.1]), r"coeff_range must be ordered .* \[0\.3, 0\.1\]"),
    ],
)
def test_bad_constructor_parameters(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "artifact, img, match",
    [
        (T.PatchArtifact(size=40), IMG, r"size=\(40, 40\) pixels is larger than the image \(spatial shape \(32, 32\)\)"),
        (T.PatchArtifact(size=[4, 40]), IMG, r"size=\(4, 40\) pixels is larger than the image"),
        (T.PatchArtifact(size=[4, 4, 4]), IMG, r"size=\[4, 4, 4\] has 3 entries but the image has 2 spatial axes"),
        (T.PatchArtifact(size=30, margin=4), IMG, r"margin=4 with size=\(30, 30\) does not fit"),
        (T.PatchArtifact(size=8, position=[30, 0]), IMG, r"position=\[30, 0\] with size=\(8, 8\) reaches beyond"),
        (T.PatchArtifact(size=8, position="random", region=[[0, 4], [0, 32]]), IMG, r"size=\(8, 8\) .* region="),
        (T.TextTagArtifact(text="PORTABLE", size=8), IMG, r"size=\(8, 8\) pixels is too small for text='PORTABLE'"),
        (T.PatchArtifact(), np.zeros((32, 32)), r"img must have shape \(C, H, W\) or \(C, H, W, D\), got shape \(32, 32\)"),
        (T.GaussianNoiseArtifact(), torch.zeros(1, 1, 8, 8, 8), r"img must have shape .* \(5 dimensions\)"),
    ],
)
def test_bad_parameters_found_at_call_time(artifact, img, match):
    with pytest.raises(ValueError, match=match):
        artifact(img)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rates": [0.05, 1.2]}, r"rates must be a finite number in \[0\.0, 1\.0\], got 1\.2"),
        ({"rates": {0: 0.1, 2: 0.9}}, r"rates keys must be the classes 0\.\.n-1, got \[0, 2\]"),
        ({"rates": 0.5}, r"rates must be a list of probabilities per class or a dict"),
        ({"rates": []}, r"rates must give a probability for at least one class"),
        ({"mode": "sometimes"}, r"mode='sometimes' is unknown; use one of \['as_trained', 'never', 'always', 'inverted'\]"),
        ({"mode": "inverted", "rates": [0.1, 0.5, 0.9]}, r"mode='inverted' swaps the rates of two classes"),
        ({"seed": "0"}, r"seed must be an integer, got '0'"),
        ({"artifact": {"size": 3}}, r"artifact config needs a '_target_'"),
        ({"artifact": {"_target_": "NoSuchArtifact"}}, r"'_target_'='NoSuchArtifact' is not a class in pipeline"),
        ({"artifact": {"_target_": "no.such.Module"}}, r"'_target_'='no.such.Module' is not a class"),
        ({"artifact": {"_target_": "PatchArtifact", "size": -1}}, r"size must be positive, got -1"),
        ({"artifact": 3}, r"artifact must be an artifact instance or a dict config, got 3"),
    ],
)
def test_bad_injection_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.ShortcutInjection(**{"artifact": T.PatchArtifact(), **kwargs})


@pytest.mark.parametrize(
    "label, sample_id, match",
    [
        (2, "a", r"label=2 has no rate: rates cover classes 0\.\.1"),
        (-1, "a", r"label=-1 has no rate"),
        (np.array([0, 1]), "a", r"label must be a class index \(one element\), got shape \(2,\)"),
        (0.5, "a", r"label must be an integer class index, got 0\.5"),
        (1, 2.5, r"sample id must be a str or an int, got 2\.5"),
    ],
)
def test_bad_labels_and_ids(label, sample_id, match):
    with pytest.raises(ValueError, match=match):
        T.ShortcutInjection(T.PatchArtifact(), rates=[0.1, 0.9])(IMG, label, sample_id)


@pytest.mark.parametrize("missing, match", [("label", r"label_key='label' is not in the item"), ("id", r"id_key='id'")])
def test_missing_label_or_id_key(missing, match):
    item = {"image": IMG, "label": 1, "id": "a"}
    del item[missing]
    inject = T.ShortcutInjectiond(keys="image", artifact=T.PatchArtifact())
    with pytest.raises(ValueError, match=match + r".*available keys: \["):
        inject(item)
