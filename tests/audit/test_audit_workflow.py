"""The audit as a bundle workflow (common/configs/audit.yaml) and in an exported bundle."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.audit.model import load_audit_model
from pipeline.bundles import ANALYSES, BUNDLES_ROOT, EXPORTED_ANALYSES, config_files, run_bundle

TINY = {"image_size": [32, 32], "network_options": {"channels": [4, 8]}}


def test_audit_is_a_workflow_of_every_bundle_merged_after_its_train_config():
    from monai.bundle import ConfigParser

    assert "audit" in ANALYSES and "audit" in EXPORTED_ANALYSES
    for bundle in ("baseline", "teacher", "distillation"):
        files = config_files(bundle, "audit")
        assert files[-1] == str(BUNDLES_ROOT / "common" / "configs" / "audit.yaml")
        assert files[2].endswith(f"{bundle}/configs/train.yaml")
    parser = ConfigParser()
    parser.read_config(config_files("baseline", "audit"))
    assert parser.get_parsed_content("audit_threshold") is None
    assert parser.get_parsed_content("audit_artifact") is None and parser["audit_role"] == "test"
    assert parser["audit_control"] == "head" and parser["audit_control_epochs"] == 30


def small_cnn_checkpoint(path):
    from pipeline.networks import build_network

    torch.manual_seed(0)
    torch.save({"network": build_network("small_cnn", 2, 1, 2, channels=[4, 8]).state_dict()}, path)
    return path


@pytest.mark.slow
def test_the_bundle_workflow_and_an_exported_bundle_audit_a_model(tiny_datalist_2d, tmp_path):
    from pipeline.bundles.export import export_bundle

    checkpoint = small_cnn_checkpoint(tmp_path / "model.pt")
    settings = {**TINY, "datalist": str(tiny_datalist_2d), "checkpoint": str(checkpoint), "output_root": str(tmp_path),
                "audit_max_images": 8, "audit_screen_images": 8, "audit_confirm": 0,
                "audit_artifact": "@artifact"}  # fmt: skip
    run_bundle("baseline", "audit", settings=settings, log_config=False)
    saved = json.loads((tmp_path / "baseline" / "audit" / "audit.json").read_text())
    assert len(saved["candidates"]) == 119 and saved["data"]["n"] == 8
    assert saved["suspected"]["artifact"]["_target_"] == "pipeline.transforms.PatchArtifact"
    exported = export_bundle("baseline", tmp_path / "exported", checkpoint=checkpoint, settings=TINY)
    config = (exported / "configs" / "audit.yaml").read_text()
    assert "pipeline.audit.run_workflow" in config and "bundles/common" not in config
    model = load_audit_model(tiny_datalist_2d, model_dir=exported)
    assert model.source["kind"] == "exported bundle" and model.image_size == (32, 32)
    assert model.source["configs"] == [str(exported / "configs" / "audit.yaml")]
