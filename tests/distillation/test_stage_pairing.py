"""``stage_pairs: auto``: teacher and student stages paired by the spatial size of their feature maps."""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline.distillation.builder import build_distillation
from pipeline.distillation.stage_pairing import auto_stage_pairs, pair_by_size, stage_sizes
from pipeline.distillation.teacher import Teacher, TeacherSpec
from pipeline.networks import network_stages

SMALL_CNN = [["stage1", "stage1"], ["stage2", "stage2"], ["stage3", "stage3"], ["stage4", "stage4"]]


def test_stage_sizes_are_measured_per_stage_for_the_image_size():
    assert stage_sizes("small_cnn", [64, 64]) == {
        "stage1": (32, 32),
        "stage2": (16, 16),
        "stage3": (8, 8),
        "stage4": (4, 4),
    }
    assert stage_sizes("small_cnn", [32, 48]) == {
        "stage1": (16, 24),
        "stage2": (8, 12),
        "stage3": (4, 6),
        "stage4": (2, 3),
    }
    with pytest.raises(ValueError, match="image_size"):
        stage_sizes("small_cnn", [64, 64, 64], spatial_dims=2)


def test_measuring_leaves_torchs_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    stage_sizes("resnet18", [32, 32])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "name, dims, size, options",
    [
        ("small_cnn", 2, 64, {}),
        ("resnet18", 2, 64, {}),
        ("alexnet", 2, 64, {}),
        ("simba_cnn", 3, 16, {"channels": [4, 8]}),
    ],
)
def test_the_same_network_pairs_every_stage_with_itself_in_order(name, dims, size, options):
    stages = list(network_stages(name, dims, **options))
    pairs = auto_stage_pairs(
        name, name, stages, [size] * dims, dims, student_options=options, teacher_options=options
    )
    assert pairs == [[s, s] for s in stages]


def test_compact_small_cnn_teacher_pairs_with_resnet18_by_resolution_at_64(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.distillation.stage_pairing"):
        pairs = auto_stage_pairs("resnet18", "small_cnn", list(network_stages("small_cnn")), [64, 64])
    assert pairs == [["layer1", "stage1"], ["layer2", "stage2"], ["layer3", "stage3"], ["layer4", "stage4"]]
    assert "layer1" in caplog.text and "stage4" in caplog.text


def test_only_the_given_teacher_stages_are_paired():
    pairs = auto_stage_pairs("resnet18", "small_cnn", ["stage4", "stage2"], [64, 64])
    assert pairs == [["layer2", "stage2"], ["layer4", "stage4"]]


def test_3d_simba_cnn_and_resnet18_pair_both_ways_and_leave_the_extra_stage_out():
    simba = {"channels": [4, 8, 8, 8, 8]}
    pairs = auto_stage_pairs(
        "simba_cnn", "resnet18", list(network_stages("resnet18", 3)), [32] * 3, 3, student_options=simba
    )
    assert pairs == [["block1", "layer1"], ["block2", "layer2"], ["block3", "layer3"], ["block4", "layer4"]]
    teacher_stages = list(network_stages("simba_cnn", 3, **simba))
    pairs = auto_stage_pairs("resnet18", "simba_cnn", teacher_stages, [32] * 3, 3, teacher_options=simba)
    assert pairs == [["layer1", "block1"], ["layer2", "block2"], ["layer3", "block3"], ["layer4", "block4"]]


def test_each_student_stage_is_paired_at_most_once():
    pairs = pair_by_size({"a": (8,), "b": (8,), "c": (4,)}, {"x": (8,), "y": (8,), "z": (8,), "w": (2,)})
    assert pairs == [["a", "x"], ["b", "y"]]


def test_no_stage_of_equal_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"stage_pairs: auto found no .*stage4.*give stage_pairs"):
        auto_stage_pairs("alexnet", "small_cnn", list(network_stages("small_cnn")), [64, 64])


def _teacher(name="small_cnn", dims=2, **options) -> Teacher:
    spec = TeacherSpec(name, dims, 1, 2, list(network_stages(name, dims, **options)), options)
    return Teacher(spec.build_network().eval(), spec.build_probes(), spec)


def test_the_builder_resolves_auto_and_keeps_explicit_lists():
    teacher = _teacher()
    auto = build_distillation("probe_kl", "auto", teacher, "small_cnn", image_size=[64, 64])
    assert [list(p) for p in auto.stage_loss.stage_pairs] == SMALL_CNN
    compact = build_distillation("feature_mse", "auto", teacher, "resnet18", image_size=[64, 64])
    assert [list(p) for p in compact.stage_loss.stage_pairs] == [
        [f"layer{i}", f"stage{i}"] for i in range(1, 5)
    ]
    explicit = build_distillation("probe_kl", [["stage3", "stage1"]], teacher, "small_cnn")
    assert [list(p) for p in explicit.stage_loss.stage_pairs] == [["stage3", "stage1"]]


def test_the_builder_refuses_auto_without_image_size_and_other_words():
    with pytest.raises(ValueError, match="image_size"):
        build_distillation("probe_kl", "auto", _teacher(), "small_cnn")
    with pytest.raises(ValueError, match="'automatic'"):
        build_distillation("probe_kl", "automatic", _teacher(), "small_cnn", image_size=[64, 64])


ALEXNET_STEM = {
    "stem_kernel_size": 5,
    "stem_stride": 2,
    "stem_padding": 2,
}  # 15, 7, 7, 7, 3 at 64 (default 7, 3, 3, 3, 1)


def test_each_side_is_measured_with_its_own_options():
    stages = [f"features.block{i}" for i in range(1, 6)]
    b = {i: f"features.block{i}" for i in range(1, 6)}
    pairs = auto_stage_pairs("alexnet", "alexnet", stages, [64, 64], student_options=ALEXNET_STEM)
    assert pairs == [[b[2], b[1]], [b[5], b[2]]]
    pairs = auto_stage_pairs("alexnet", "alexnet", stages, [64, 64], teacher_options=ALEXNET_STEM)
    assert pairs == [[b[1], b[2]], [b[2], b[5]]]
    assert stage_sizes("alexnet", [64, 64], options=ALEXNET_STEM)[b[1]] == (15, 15)


def test_the_pairing_is_logged_with_both_networks_and_the_size(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.distillation.stage_pairing"):
        auto_stage_pairs("resnet18", "small_cnn", ["stage2"], [64, 64])
    assert caplog.messages == [
        "stage_pairs: auto pairs [['layer2', 'stage2']] (student resnet18, teacher small_cnn, spatial sizes at [64, 64])"
    ]


def test_error_messages_name_the_sizes_and_the_way_out():
    message = (
        "stage_pairs: auto found no student stage with the spatial size of a teacher stage "
        "(student {'a': (8,)}, teacher {'x': (4,)}); give stage_pairs as [[student stage, teacher stage], ...]"
    )
    with pytest.raises(ValueError) as error:
        pair_by_size({"a": (8,)}, {"x": (4,)})
    assert str(error.value) == message
    with pytest.raises(ValueError, match=r"^image_size \[64, 64, 64\] must have 2 entries \(spatial_dims\)$"):
        stage_sizes("small_cnn", [64, 64, 64], spatial_dims=2)
