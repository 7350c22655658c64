"""`clean_role`: the images of a bias-free role join the student's training set without the artifact."""

from __future__ import annotations

import numpy as np
import pytest
from bundle_helpers import run_workflow, tiny_settings, workflow
from monai.transforms import Compose

from pipeline.engine.datalist import load_role, with_clean_role


def test_with_clean_role_marks_the_role_and_skips_ids_already_present(tiny_datalist_2d):
    train, teacher = load_role(tiny_datalist_2d, "train"), load_role(tiny_datalist_2d, "teacher")
    assert with_clean_role(train, tiny_datalist_2d, None) == train
    mixed = with_clean_role(train + teacher[:3], tiny_datalist_2d, "teacher")
    assert mixed[: len(train) + 3] == train + teacher[:3]  # the given items first, unmarked
    assert mixed[len(train) + 3 :] == [dict(item, clean=True) for item in teacher[3:]]


@pytest.fixture(scope="module")
def teacher_root(tiny_datalist_2d, tmp_path_factory):
    root = tmp_path_factory.mktemp("clean_role")
    run_workflow("teacher", "train", tiny_settings(tiny_datalist_2d, root, probe_epochs=1, max_epochs=1))
    return root


def test_clean_role_items_are_trained_on_without_the_artifact(tiny_datalist_2d, teacher_root):
    settings = tiny_settings(tiny_datalist_2d, teacher_root, clean_role="teacher", bias_rates=[1.0, 1.0])
    parser = workflow("distillation", "train", settings).parser
    train, teacher = load_role(tiny_datalist_2d, "train"), load_role(tiny_datalist_2d, "teacher")
    items, dataset = parser.get_parsed_content("train#items"), parser.get_parsed_content("train#dataset")
    assert len(dataset) == len(train) + len(teacher)
    assert [str(item["id"]) for item in items if item.get("clean")] == [str(item["id"]) for item in teacher]
    plain = Compose(parser.get_parsed_content("preprocessing") + parser.get_parsed_content("finishing"))
    for item, sample in zip(items, dataset):
        if item.get("clean"):
            assert sample["bias"] == 0
            np.testing.assert_allclose(np.asarray(sample["image"]), np.asarray(plain(dict(item))["image"]), atol=1e-6)
        else:
            assert sample["bias"] == 1  # every training item injected (rates 1, 1)


def test_student_distils_on_the_clean_role_too(tiny_datalist_2d, teacher_root):
    settings = tiny_settings(tiny_datalist_2d, teacher_root, clean_role="teacher", max_epochs=2)
    wf = run_workflow("distillation", "train", settings)
    cached = {key for key, _ in wf.parser.get_parsed_content("train#trainer").target_cache.items()}
    teacher_ids = {str(item["id"]) for item in load_role(tiny_datalist_2d, "teacher")}
    assert {(i, 0) for i in teacher_ids} <= cached  # the teacher's targets of its clean images, reused
    assert len(cached) == len(load_role(tiny_datalist_2d, "train")) + len(teacher_ids)


def test_a_clean_role_the_datalist_lacks_is_named_at_start_up(tiny_datalist_2d, teacher_root):
    with pytest.raises(RuntimeError) as error:
        workflow("distillation", "train", tiny_settings(tiny_datalist_2d, teacher_root, clean_role="clean"))
    assert "has no role 'clean'" in str(error.value.__cause__)


def test_the_clean_images_baseline_is_erm_with_the_same_items(tiny_datalist_2d, tmp_path):
    from pipeline.bundles import BUNDLES_ROOT

    override = BUNDLES_ROOT / "baseline" / "configs" / "mitigation" / "clean_images.yaml"
    wf = run_workflow("baseline", "train", tiny_settings(tiny_datalist_2d, tmp_path), overrides=[override])
    items = wf.parser.get_parsed_content("train#items")
    teacher = load_role(tiny_datalist_2d, "teacher")
    assert [i for i in items if i.get("clean")] == [dict(t, clean=True) for t in teacher]
    assert len(items) == len(load_role(tiny_datalist_2d, "train")) + len(teacher)
    assert (tmp_path / "clean_images" / "models" / "model.pt").is_file()
