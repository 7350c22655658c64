"""Run bundle workflows in-process the way MONAI's model zoo tests its bundles."""

from __future__ import annotations

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
