"""Diffuse artifacts change the whole image with the configured statistics."""

import numpy as np
import pytest
from artifact_cases import smooth_image

import pipeline.transforms as T

NDIMS = (2, 3)


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("std, mean", [(0.1, 0.0), (0.5, 0.2)])
def test_gaussian_noise_statistics(ndim, std, mean):
    img = smooth_image(ndim)
    noise = T.GaussianNoiseArtifact(std=std, mean=mean).set_random_state(seed=1)(img) - img
    n = noise.size
    assert np.all(noise != 0)
    assert abs(noise.mean() - mean) < 4 * std / np.sqrt(n)
    assert abs(noise.std() / std - 1) < 4 / np.sqrt(2 * n)


@pytest.mark.parametrize("ndim", NDIMS)
def test_rician_noise_statistics(ndim):
    img = np.full((1,) + (32,) * ndim if ndim == 2 else (1, 16, 16, 16), 10.0, dtype=np.float32)
    std = 0.3
    out = T.RicianNoiseArtifact(std=std).set_random_state(seed=2)(img)
    n = out.size
    assert np.all(out > 0)
    # far from zero the Rician is close to a Gaussian: mean 10 + std^2 / 20, the same std
    assert abs(out.mean() - (10 + std**2 / 20)) < 4 * std / np.sqrt(n)
    assert abs(out.std() / std - 1) < 5 / np.sqrt(2 * n)
    low = T.RicianNoiseArtifact(std=std).set_random_state(seed=2)(np.zeros_like(img))
    assert low.mean() == pytest.approx(std * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh at zero signal


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("pivot", ["mean", "median", 0.3])
@pytest.mark.parametrize("factor", [1.2, 0.5])
def test_contrast_about_the_pivot(ndim, pivot, factor):
    img = smooth_image(ndim)
    out = T.ContrastArtifact(factor=factor, pivot=pivot)(img)
    p = {"mean": img.mean(), "median": np.sort(img.ravel())[(img.size - 1) // 2]}.get(pivot, pivot)
    np.testing.assert_allclose(out - p, factor * (img - p), atol=1e-5)
    if pivot == "mean":
        assert out.mean() == pytest.approx(img.mean(), abs=1e-5)
        assert out.std() == pytest.approx(factor * img.std(), rel=1e-4)


@pytest.mark.parametrize("ndim", NDIMS)
def test_intensity_shift(ndim):
    img = smooth_image(ndim)
    np.testing.assert_allclose(T.IntensityShiftArtifact(offset=-0.7)(img), img - 0.7, atol=1e-6)


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gamma_within_the_range(ndim, gamma):
    img = smooth_image(ndim)
    out = T.GammaArtifact(gamma=gamma)(img)
    lo, hi = img.min(), img.max()
    np.testing.assert_allclose(out, ((img - lo) / (hi - lo)) ** gamma * (hi - lo) + lo, atol=1e-5)
    assert out.min() == pytest.approx(lo, abs=1e-6) and out.max() == pytest.approx(hi, abs=1e-5)


@pytest.mark.parametrize("ndim", NDIMS)
def test_blur_smooths_everything(ndim):
    img = np.random.default_rng(0).random((1,) + ((32, 32) if ndim == 2 else (16, 16, 16))).astype(np.float32)
    out = T.BlurArtifact(sigma=1.5)(img)
    assert np.all(out != img)
    assert out.std() < 0.5 * img.std()
    per_axis = T.BlurArtifact(sigma=[3.0] + [0.5] * (ndim - 1))(img)
    along = [np.abs(np.diff(per_axis[0], axis=a)).mean() for a in range(ndim)]
    assert along[0] < min(along[1:])  # the strongest blur is along the first axis


@pytest.mark.parametrize("ndim", NDIMS)
def test_bias_field_is_smooth_and_multiplicative(ndim):
    img = smooth_image(ndim) + 1.0
    out = T.BiasFieldArtifact(degree=3, coeff_range=[0.1, 0.3]).set_random_state(seed=0)(img)
    log_field = np.log(out / img)[0]
    assert np.all(np.abs(log_field) > 0) and log_field.std() > 0.01
    # log(out / img) is a Legendre polynomial of degree 3 in each coordinate
    coords = np.meshgrid(*[np.linspace(-1, 1, n) for n in log_field.shape], indexing="ij")
    vander = (np.polynomial.legendre.legvander2d if ndim == 2 else np.polynomial.legendre.legvander3d)(
        *[c.ravel() for c in coords], [3] * ndim
    )
    coeffs, *_ = np.linalg.lstsq(vander, log_field.ravel(), rcond=None)
    np.testing.assert_allclose(vander @ coeffs, log_field.ravel(), atol=1e-4)
    assert np.abs(coeffs).max() > 0.05
    other = T.BiasFieldArtifact(degree=3, coeff_range=[0.1, 0.3]).set_random_state(seed=1)(img)
    assert not np.allclose(other, out)
