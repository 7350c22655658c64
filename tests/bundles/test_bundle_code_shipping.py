"""The code an exported bundle ships (pipeline.bundles.vendor) and the settings a run records
(pipeline.bundles.run_settings)."""

from __future__ import annotations

import json

import pytest

from pipeline.bundles import vendor
from pipeline.bundles.export import settings_from_run
from pipeline.bundles.run_settings import artifact_config, read_run_settings, save_run_settings
from pipeline.transforms import GaussianNoiseArtifact, PatchArtifact, TextTagArtifact, build_artifact


def test_sources_are_moved_under_the_code_package():
    source = (
        "from pipeline.networks import build_network\n"
        "    from data_prep.splits import ROLE_ORDER\n"
        "component = importlib.import_module('pipeline.transforms')\n"
        "text = 'a pipeline of steps'\n"
    )
    shipped = vendor.rewrite_source(source)
    assert "from scripts.pipeline.networks import build_network" in shipped
    assert "    from scripts.data_prep.splits import ROLE_ORDER" in shipped
    assert "import_module('scripts.pipeline.transforms')" in shipped
    assert "'a pipeline of steps'" in shipped  # prose is left alone
    with pytest.raises(ValueError, match=r"x\.py: `import pipeline.networks` cannot be shipped"):
        vendor.rewrite_source("import pipeline.networks\n", "x.py")


def test_configs_bind_the_package_names_to_the_shipped_code_and_drop_unused_imports():
    config = {
        "imports": ["$import torch", "$import pipeline", "$import pipeline.engine.datalist", "$import data_prep.embedded"],
        "net": "$pipeline.networks.build_network('small_cnn', 2, 1, 2)",
        "load": {"_target_": "pipeline.engine.image_io.load_image", "keys": "image"},
        "monai_part": {"_target_": "SimpleInferer"},
    }
    rewritten = vendor.rewrite_config(config)
    assert rewritten["imports"] == ["$import torch", "$import scripts.pipeline as pipeline"]
    assert rewritten["load"]["_target_"] == "scripts.pipeline.engine.image_io.load_image"
    assert rewritten["monai_part"] == {"_target_": "SimpleInferer"}
    assert rewritten["net"] == config["net"]  # `pipeline` is bound to scripts.pipeline


def test_the_closure_holds_what_a_config_reaches_and_no_more():
    closure = vendor.import_closure({"pipeline.networks"})
    assert {"pipeline", "pipeline.networks", "pipeline.networks.registry", "pipeline.networks.small_cnn"} <= set(closure)
    assert not any(name.startswith(("pipeline.experiment", "pipeline.bundles", "data_prep")) for name in closure)
    requirements = vendor.third_party_requirements(closure.values(), closure)
    assert "torch" not in requirements and "monai" not in requirements  # their own metadata keys


@pytest.mark.parametrize(
    "artifact",
    [PatchArtifact(size=6, position="top_left", intensity=1.0), GaussianNoiseArtifact(0.02),
     TextTagArtifact(text="PORTABLE", size=0.25)],
)  # fmt: skip
def test_an_artifact_is_recorded_as_a_config_that_builds_it_again(artifact):
    config = artifact_config(artifact)
    assert config["_target_"] == f"pipeline.transforms.{type(artifact).__name__}"
    json.dumps(config)
    rebuilt = build_artifact(config)
    assert type(rebuilt) is type(artifact) and artifact_config(rebuilt) == config
    assert artifact_config(None) is None


def test_run_settings_round_trip_and_contradictions(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"metadata": {"source": "isic2017", "channels": 3, "labels": {"0": "a", "1": "b"}}}))
    save_run_settings(
        tmp_path / "models", datalist, network_name="small_cnn", image_size=(32, 32), in_channels=3,
        intensity_range=[0, 255], artifact=PatchArtifact(size=4),
    )  # fmt: skip
    run = read_run_settings(tmp_path / "models" / "model.pt")
    assert run["image_size"] == [32, 32] and run["intensity_range"] == [0.0, 255.0]
    assert run["datalist_metadata"]["source"] == "isic2017"
    assert run["artifact"] == {"_target_": "pipeline.transforms.PatchArtifact", "size": 4}
    merged = settings_from_run(run, {"in_channels": 3, "max_epochs": 2})
    assert merged["image_size"] == [32, 32] and merged["max_epochs"] == 2
    assert merged["scaling_range"] == [0.0, 255.0] and merged["datalist"] == str(datalist)
    with pytest.raises(ValueError, match=r"--in_channels 1 contradicts the run, which trained with in_channels=3"):
        settings_from_run(run, {"in_channels": 1})
    assert read_run_settings(tmp_path / "elsewhere" / "model.pt") is None
    (tmp_path / "models" / "run_settings.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_run_settings(tmp_path / "models" / "model.pt")


def test_a_distillation_export_ships_its_teacher_or_says_how_to_supply_it(tmp_path):
    from pipeline.bundles.export import _teacher_file, _training_text

    checkpoint = tmp_path / "distillation" / "models" / "model.pt"
    teacher = tmp_path / "teacher" / "models" / "teacher.pt"
    run = {"teacher_checkpoint": str(teacher)}
    assert _teacher_file("distillation", checkpoint, run) is None  # gone: not shipped
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"weights")
    assert _teacher_file("distillation", checkpoint, run) == teacher
    config = {"learning_rate": 0.001, "max_epochs": 6, "batch_size": 64, "bundle_name": "distillation",
              "task_weight": 0.5, "distill_kind": "probe_kl", "stage_weights": 10.0, "logit_weight": 5.0,
              "temperature": 2.0, "selection": "final"}  # fmt: skip
    shipped, missing = _training_text("distillation", config, True), _training_text("distillation", config, False)
    assert "DistillationTrainer" in shipped and "selection: final" in shipped and "best checkpoint" not in shipped
    assert "shipped as `models/teacher.pt`" in shipped
    assert "The teacher is not shipped" in missing and "--teacher_checkpoint" in missing


def test_an_artifact_of_the_users_own_does_not_stop_the_run(tmp_path):
    class Mine:
        def __call__(self, image):
            return image

    save_run_settings(tmp_path, None, artifact=Mine(), image_size=[32, 32])
    run = read_run_settings(tmp_path / "model.pt")
    assert "_unrecorded_" in run["artifact"]
    assert "artifact" not in settings_from_run(run, {})  # the export keeps the config's artifact
