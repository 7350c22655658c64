"""Every artifact, 2D and 3D: input types, dtype, device and metadata kept, input untouched,
dictionary twin equal to the array transform, seeding and bundle-config instantiation."""

import numpy as np
import pytest
import torch
from artifact_cases import ALL, RANDOM, smooth_image
from monai.bundle import ConfigParser
from monai.data import MetaTensor

NDIMS = (2, 3)


def make(name, seed=0):
    cls, _, kwargs = ALL[name]
    return cls(**kwargs).set_random_state(seed=seed)


def as_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def inputs(ndim):
    base = smooth_image(ndim)
    affine = torch.diag(torch.tensor([0.5, 2.0, 3.0, 1.0], dtype=torch.float64))
    return {
        "numpy_float32": base.copy(),
        "numpy_uint8": np.round(base * 255).astype(np.uint8),
        "tensor_float64": torch.as_tensor(base, dtype=torch.float64),
        "tensor_int16": torch.as_tensor(np.round(base * 1000).astype(np.int16)),
        "metatensor": MetaTensor(torch.as_tensor(base), affine=affine, meta={"filename_or_obj": "scan.nii.gz"}),
    }


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", sorted(ALL))
def test_keeps_type_dtype_metadata_and_input(name, ndim):
    for kind, img in inputs(ndim).items():
        before = img.clone() if isinstance(img, torch.Tensor) else img.copy()
        out = make(name)(img)
        assert type(out) is type(img), kind
        assert out.dtype == img.dtype, kind
        assert out.shape == img.shape, kind
        assert not np.array_equal(as_numpy(out), as_numpy(img)), f"{kind}: nothing changed"
        assert np.array_equal(as_numpy(img), as_numpy(before)), f"{kind}: input modified"
        if isinstance(img, torch.Tensor):
            assert out.device == img.device
        if isinstance(img, MetaTensor):
            assert torch.equal(out.affine, img.affine)
            assert out.meta["filename_or_obj"] == "scan.nii.gz"
            out.meta["filename_or_obj"] = "changed"
            assert img.meta["filename_or_obj"] == "scan.nii.gz", "output shares the input's meta dict"


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", sorted(ALL))
def test_dictionary_twin_equals_array_transform(name, ndim):
    cls, dict_cls, kwargs = ALL[name]
    img = smooth_image(ndim)
    expected = cls(**kwargs).set_random_state(seed=3)(img)
    twin = dict_cls(keys=["image", "copy", "absent"], allow_missing_keys=True, **kwargs).set_random_state(seed=3)
    item = {"image": img, "copy": img.copy(), "label": 1}
    out = twin(item)
    np.testing.assert_array_equal(out["image"], expected)
    np.testing.assert_array_equal(out["copy"], expected)  # every key gets the same draw
    assert out["label"] == 1 and "absent" not in out
    assert item["image"] is img, "the input dict was modified"
    with pytest.raises(KeyError):
        dict_cls(keys="absent", **kwargs)(item)


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", RANDOM)
def test_seeding(name, ndim):
    img = smooth_image(ndim)
    a, b = make(name, seed=7), make(name, seed=7)
    first = a(img)
    np.testing.assert_array_equal(first, b(img))
    np.testing.assert_array_equal(a(img, randomize=False), first)  # repeats the previous draw
    assert not np.array_equal(a(img), first)  # next draw differs
    assert not np.array_equal(make(name, seed=8)(img), first)


@pytest.mark.parametrize("name", sorted(set(ALL) - set(RANDOM)))
def test_deterministic_artifacts_ignore_seed(name):
    img = smooth_image(2)
    np.testing.assert_array_equal(make(name, seed=1)(img), make(name, seed=2)(img))


def test_bundle_config_instantiates_artifacts_and_injection():
    config = {
        "noise": {"_target_": "pipeline.transforms.GaussianNoiseArtifactd", "keys": "image", "std": 0.1},
        "inject": {
            "_target_": "pipeline.transforms.ShortcutInjectiond",
            "keys": ["image"],
            "artifact": {"_target_": "pipeline.transforms.TextTagArtifact", "text": "L", "size": [8, 6]},
            "rates": {0: 0.0, 1: 1.0},
            "seed": 5,
        },
    }
    parser = ConfigParser(config)
    item = {"image": smooth_image(2), "label": 1, "id": "case-1"}
    out = parser.get_parsed_content("inject")(parser.get_parsed_content("noise")(item))
    assert out["bias"] == 1
    assert out["image"].shape == (1, 32, 32)


@pytest.mark.gpu  # selected by `make test-gpu`
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(ALL))
def test_cuda_tensor_stays_on_device(name):
    img = torch.as_tensor(smooth_image(3), device="cuda")
    out = make(name)(img)
    assert out.device == img.device
    cpu = make(name)(img.cpu())
    expected = as_numpy(cpu)  # other kernels: rounding relative to the image's magnitude
    np.testing.assert_allclose(as_numpy(out), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
