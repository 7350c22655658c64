"""Run bundle workflows in-process the way MONAI's model zoo tests its bundles."""

from __future__ import annotations

import torch
from monai.bundle import ConfigWorkflow

from pipeline.bundles import config_files, logging_file, meta_file


def tiny_settings(datalist, output_root, spatial_dims=2, size=32, **extra):
    """Overrides for a fast CPU run: tiny images, one epoch, no progress bar or TensorBoard."""
    settings = {
        "datalist": str(datalist),
        "output_root": str(output_root),
        "spatial_dims": spatial_dims,
        "image_size": [size] * spatial_dims,
        "max_epochs": 1,
        "batch_size": 16,
        "progress_bar": False,
        "tensorboard": False,
    }
    settings.update(extra)
    return settings


def workflow(bundle, kind="train", settings=None, scenario=None, overrides=()):
    """An initialized ConfigWorkflow (properties checked for train/inference)."""
    wf = ConfigWorkflow(
        config_file=config_files(bundle, kind, scenario, overrides),
        meta_file=meta_file(bundle),
        logging_file=logging_file(bundle),
        workflow_type={"train": "train", "inference": "infer"}.get(kind),
        **(settings or {}),
    )
    wf.initialize()
    if kind in ("train", "inference"):
        missing = wf.check_properties()
        assert not missing, f"{bundle} {kind}: missing required properties {missing}"
    return wf


def run_workflow(bundle, kind="train", settings=None, scenario=None, overrides=()):
    wf = workflow(bundle, kind, settings, scenario, overrides)
    wf.run()
    wf.finalize()
    return wf


def assert_same_weights(actual: dict, expected: dict, what: str = "") -> None:
    """Two state dicts hold the same tensors: floats within float noise (relative to each
    tensor's scale), everything else equal; nested dicts (optimizer states) compared entry by entry."""
    assert actual.keys() == expected.keys(), what
    for key, value in expected.items():
        name = f"{what}{key}"
        if isinstance(value, dict):
            assert_same_weights(actual[key], value, f"{name}.")
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            scale = value.abs().max().item() or 1.0
            torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5 * scale, msg=name)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(actual[key], value), name
        else:
            assert actual[key] == value, name
