"""Layer analysis finds where a shortcut lives: probes, counterfactual KL, prediction depth, outputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import DataLoader, Dataset

from pipeline.evaluation.counterfactual import counterfactual_stage_kl
from pipeline.evaluation.layer_features import collect_layer_features
from pipeline.evaluation.layer_figures import (
    LAYER_COLUMNS,
    combine_layer_outputs,
    compare_scenarios,
    plot_layer_curves,
)
from pipeline.evaluation.layers import analyse_layers
from pipeline.evaluation.linear_probes import LinearProbe, fit_linear_probe, probe_aucs
from pipeline.evaluation.prediction_depth import (
    depth_from_agreement,
    knn_predict,
    prediction_depth,
    prediction_depths,
)
from pipeline.networks import StageProbes, build_network
from pipeline.transforms import IntensityShiftArtifact, PatchArtifact, ShortcutInjectiond

CHANNELS_2D = (4, 8, 16, 32)
STAGES_2D = ["stage1", "stage2", "stage3", "stage4"]
BRIGHT_PATCH = PatchArtifact(size=6, position="top_left", intensity=2.0, intensity_mode="absolute")
PATCH = {"keys": "image", "artifact": BRIGHT_PATCH, "rates": [0.5, 0.5], "seed": 0}
N = 64
NO_OP = {**PATCH, "artifact": IntensityShiftArtifact(0.0)}


def make_items(n, ndim=2, seed=0, prefix="s"):
    """Noise images whose label is a small global brightening (class 1), with string ids."""
    rng = np.random.default_rng(seed)
    shape = (32, 32) if ndim == 2 else (16, 16, 16)
    items = []
    for i in range(n):
        label = i % 2
        image = rng.uniform(0.0, 0.5, size=(1, *shape)) + 0.15 * label
        items.append({"image": image.astype(np.float32), "label": label, "id": f"{prefix}{i:03d}"})
    return items


def small_cnn(ndim=2, channels=CHANNELS_2D, seed=0):
    torch.manual_seed(seed)
    return build_network("small_cnn", spatial_dims=ndim, channels=list(channels))


def layer_loaders(items_fit, items_eval, injection, batch_size=32):
    """The four loaders of bundles/common/configs/layers.yaml, built in Python: probe sets with the
    artifact on half of each class, counterfactual pairs of the evaluation items."""
    balanced = {**injection, "rates": [0.5] * len(injection["rates"])}

    def loader(items, mode, options):
        return DataLoader(Dataset(list(items), ShortcutInjectiond(**options, mode=mode)), batch_size=batch_size)

    return {
        "probe_fit": loader(items_fit, "as_trained", balanced),
        "probe_eval": loader(items_eval, "as_trained", balanced),
        "cf_with": loader(items_eval, "always", injection),
        "cf_without": loader(items_eval, "never", injection),
    }


def linear_probe_scores(model, stages, loader_fit, loader_eval, targets=("bias", "label")):
    """Probe AUCs of a model's stages: features of both loaders, then :func:`probe_aucs`."""
    fit = collect_layer_features(model, stages, loader_fit, targets, id_key=None)
    evaluation = collect_layer_features(model, stages, loader_eval, targets, id_key=None)
    return probe_aucs(fit, evaluation, targets)[0]


def label_probes(model, stages, loader):
    """A label probe per stage, fitted on the loader's pooled features."""
    features = collect_layer_features(model, stages, loader, ["label"], id_key=None)
    return {stage: fit_linear_probe(features.pooled[stage], features.targets["label"]) for stage in stages}


@pytest.fixture(scope="module")
def items():
    return make_items(N, seed=0, prefix="fit"), make_items(N, seed=1, prefix="eval")


@pytest.fixture(scope="module")
def patch_loaders(items):
    return layer_loaders(items[0], items[1], injection=PATCH, batch_size=32)


@pytest.fixture(scope="module")
def no_op_loaders(items):
    return layer_loaders(items[0], items[1], injection=NO_OP, batch_size=32)


# ----------------------------------------------------------------------------- linear probes


def test_bias_probe_finds_visible_patch_at_stage1_and_nothing_without_it(patch_loaders, no_op_loaders):
    model = small_cnn()
    seen = linear_probe_scores(model, ["stage1"], patch_loaders["probe_fit"], patch_loaders["probe_eval"])
    blind = linear_probe_scores(model, ["stage1"], no_op_loaders["probe_fit"], no_op_loaders["probe_eval"])
    assert list(seen.columns) == list(LAYER_COLUMNS[1:])
    assert sorted(seen["metric"].unique()) == ["probe_auc_bias", "probe_auc_label"]
    at = {(r.stage, r.metric): r.value for r in seen.itertuples()}
    blind_at = {(r.stage, r.metric): r.value for r in blind.itertuples()}
    assert at[("stage1", "probe_auc_bias")] > 0.9
    # the same bias flags, but the images carry no trace of them: chance level
    assert abs(blind_at[("stage1", "probe_auc_bias")] - 0.5) < 0.2
    # the class (a global brightening) is visible in both cases
    assert at[("stage1", "probe_auc_label")] > 0.9 and blind_at[("stage1", "probe_auc_label")] > 0.9


def test_probe_scores_are_deterministic_and_leave_the_model_as_it_was(patch_loaders):
    model = small_cnn()
    model.train()
    model.stage2.eval()  # a mixed state must be restored module by module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaders = patch_loaders["probe_fit"], patch_loaders["probe_eval"]
    first = linear_probe_scores(model, ["stage1", "stage3"], *loaders, targets=["bias"])
    second = linear_probe_scores(model, ["stage1", "stage3"], *loaders, targets=["bias"])
    pd.testing.assert_frame_equal(first, second)
    assert model.training and model.stage1.training and not model.stage2.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_fit_linear_probe_separates_classes_and_rejects_one_class():
    generator = torch.Generator().manual_seed(0)
    target = torch.arange(60) % 2
    features = torch.randn(60, 5, generator=generator)
    features[:, 2] += 3.0 * target  # one informative, differently scaled feature
    probe = fit_linear_probe(features * 100.0, target)
    assert isinstance(probe, LinearProbe)
    assert (probe.probabilities(features * 100.0).argmax(dim=1) == target).float().mean() > 0.9
    assert probe.weight[:, 2].abs().max() > 3 * probe.weight[:, [0, 1, 3, 4]].abs().max()
    with pytest.raises(ValueError, match="single class"):
        fit_linear_probe(features, torch.zeros(60, dtype=torch.long))
    with pytest.raises(ValueError, match="expects \\(N, 5\\)"):
        probe.logits(torch.zeros(3, 4))


def test_probe_scores_reject_bad_targets_and_batches(patch_loaders):
    model = small_cnn()
    fit, evaluation = patch_loaders["probe_fit"], patch_loaders["probe_eval"]
    with pytest.raises(ValueError, match="'group' is not in the batch"):
        linear_probe_scores(model, ["stage1"], fit, evaluation, targets=["group"])
    with pytest.raises(ValueError, match="no module"):
        linear_probe_scores(model, ["stage9"], fit, evaluation)
    tuples = [(torch.zeros(2, 1, 32, 32), torch.zeros(2))]
    with pytest.raises(ValueError, match="batches must be dicts"):
        linear_probe_scores(model, ["stage1"], tuples, tuples)
    three_classes = [{"image": torch.rand(6, 1, 32, 32), "label": torch.arange(6) % 3, "bias": torch.arange(6) % 2}]
    with pytest.raises(ValueError, match="'label' must be 0/1"):
        linear_probe_scores(model, ["stage1"], three_classes, three_classes)


def test_single_class_eval_set_gives_nan_with_warning(patch_loaders):
    model = small_cnn()
    only_bias = [b for b in patch_loaders["cf_with"]]  # every image has the artifact
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = linear_probe_scores(model, ["stage1"], patch_loaders["probe_fit"], only_bias, targets=["bias"])
    assert np.isnan(table["value"].iloc[0])
    assert any("undefined" in str(w.message) for w in caught)


# ----------------------------------------------------------------------------- counterfactual KL


def test_counterfactual_kl_is_zero_for_a_no_op_artifact_and_positive_for_a_patch(patch_loaders, no_op_loaders):
    model = small_cnn()
    probes = label_probes(model, STAGES_2D, patch_loaders["probe_fit"])
    patch = counterfactual_stage_kl(model, probes, patch_loaders["cf_with"], patch_loaders["cf_without"])
    no_op = counterfactual_stage_kl(model, probes, no_op_loaders["cf_with"], no_op_loaders["cf_without"])
    assert list(patch["stage"]) == STAGES_2D and set(patch["metric"]) == {"counterfactual_kl"}
    assert (no_op["value"] == 0.0).all()
    assert (patch["value"] > 1e-4).all()


def test_counterfactual_kl_with_stage_probes_pairs_samples_by_id(patch_loaders, items):
    model = small_cnn()
    torch.manual_seed(1)
    probes = StageProbes.from_network("small_cnn", ["stage1", "stage2"], channels=list(CHANNELS_2D))
    probes.train()
    kl = counterfactual_stage_kl(model, probes, patch_loaders["cf_with"], patch_loaders["cf_without"])
    assert (kl["value"] > 0).all() and probes.training
    # the same pairs in another order and batching give the same numbers
    reversed_without = layer_loaders(items[0], items[1][::-1], PATCH, batch_size=7)["cf_without"]
    shuffled = counterfactual_stage_kl(model, probes, patch_loaders["cf_with"], reversed_without)
    np.testing.assert_allclose(shuffled["value"], kl["value"], rtol=1e-4)
    # no pairs without the artifact at all: the pairing is checked
    unrelated = layer_loaders(items[0], make_items(N, prefix="other"), PATCH)["cf_without"]
    with pytest.raises(ValueError, match="same sample ids"):
        counterfactual_stage_kl(model, probes, patch_loaders["cf_with"], unrelated)
    with pytest.raises(ValueError, match="stage_probes must be"):
        counterfactual_stage_kl(model, {"stage1": torch.nn.Linear(8, 2)}, patch_loaders["cf_with"], unrelated)


# ----------------------------------------------------------------------------- prediction depth


def hand_made_stages(pattern, n_copies=3):
    """Memory: class c at feature value (2c - 1); queries of final class 1 agree at stage j iff pattern[j]."""
    memory_labels = torch.tensor([0, 1] * n_copies)
    memory = {f"s{j}": (2.0 * memory_labels - 1.0)[:, None] for j in range(len(pattern))}
    queries = {f"s{j}": torch.tensor([[1.0 if agrees else -1.0]]) for j, agrees in enumerate(pattern)}
    return memory, memory_labels, queries


@pytest.mark.parametrize(
    "pattern, depth",
    [
        ([False, False, True, True], 2),  # identical to the final prediction from stage 2 on
        ([True, True, True, True], 0),
        ([True, False, True, True], 2),  # an early agreement that a later stage undoes does not count
        ([True, True, True, False], 4),  # the last stage disagrees: only the output decides
        ([False, True, False, True], 3),
    ],
)
def test_prediction_depth_on_hand_made_features(pattern, depth):
    memory, labels, queries = hand_made_stages(pattern)
    assert prediction_depths(memory, labels, queries, final_predictions=[1], k=3).tolist() == [depth]


def test_depth_from_agreement_and_knn_votes():
    agreement = torch.tensor([[0, 0, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]])
    assert depth_from_agreement(agreement).tolist() == [3, 0, 1, 3]
    memory = torch.tensor([[0.0], [1.0], [1.1], [5.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert knn_predict(memory, labels, torch.tensor([[0.1], [0.9]]), k=3).tolist() == [1, 1]
    # one vote each: the class of the nearest neighbour wins
    assert knn_predict(memory, labels, torch.tensor([[0.2], [1.2]]), k=2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 4\\]"):
        knn_predict(memory, labels, memory, k=5)


def test_prediction_depth_of_a_model(patch_loaders):
    model = small_cnn()
    result = prediction_depth(model, STAGES_2D, patch_loaders["probe_fit"], patch_loaders["probe_eval"], k=5)
    frame = result.per_sample
    assert len(frame) == N and frame["id"].str.startswith("eval").all()
    assert frame["depth"].between(0, len(STAGES_2D)).all()
    assert result.mean == pytest.approx(frame["depth"].mean())
    by_bias = result.mean_by_bias()
    assert set(by_bias) == {0, 1}
    assert by_bias[1] == pytest.approx(frame.loc[frame["bias"] == 1, "depth"].mean())
    again = prediction_depth(model, STAGES_2D, patch_loaders["probe_fit"], patch_loaders["probe_eval"], k=5)
    pd.testing.assert_frame_equal(frame, again.per_sample)


# ----------------------------------------------------------------------------- driver and figures


def test_analyse_layers_writes_table_depths_and_figure(tmp_path, patch_loaders):
    models = {"erm": small_cnn(seed=0), "other": small_cnn(channels=(4, 8), seed=1)}  # "other": registry stages
    table = analyse_layers(models, {"erm": ["stage1", "stage3"]}, patch_loaders, tmp_path / "out", k=3)
    assert list(table.columns) == list(LAYER_COLUMNS)
    written = pd.read_csv(tmp_path / "out" / "layers.csv")
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    expected = {"probe_auc_bias", "probe_auc_label", "counterfactual_kl", "knn_agreement"}
    assert expected | {"decided_bias0", "decided_bias1"} == set(table["metric"])
    assert len(table) == 2 * 2 * 6
    assert set(table.loc[table["model"] == "other", "stage"]) == {"stage1", "stage2"}
    decided = table[table["metric"] == "decided_bias1"].sort_values(["model", "stage_index"])
    assert (decided.groupby("model")["value"].diff().dropna() >= 0).all()  # cumulative share
    depths = pd.read_csv(tmp_path / "out" / "prediction_depth.csv")
    assert len(depths) == 2 * N and set(depths["model"]) == {"erm", "other"}
    assert (tmp_path / "out" / "layer_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    side_by_side = plot_layer_curves({"patch": table, "noise": table[table["model"] == "erm"]}, tmp_path / "both.png")
    assert side_by_side.read_bytes()[:4] == b"\x89PNG"


def test_analyse_layers_rejects_incomplete_input(tmp_path, patch_loaders):
    model = {"m": small_cnn()}
    with pytest.raises(ValueError, match="loaders lack \\['probe_eval'\\]"):
        analyse_layers(model, None, {"probe_fit": patch_loaders["probe_fit"]}, tmp_path)
    only_with = {k: v for k, v in patch_loaders.items() if k != "cf_without"}
    with pytest.raises(ValueError, match="both 'cf_with' and 'cf_without'"):
        analyse_layers(model, None, only_with, tmp_path)
    plain = {"m": torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())}
    with pytest.raises(ValueError, match="stages\\['m'\\] is missing"):
        analyse_layers(plain, None, patch_loaders, tmp_path)
    with pytest.raises(ValueError, match="lacks column"):
        plot_layer_curves({"patch": pd.DataFrame({"stage": ["stage1"]})}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_analysis_in_3d(tmp_path):
    fit, evaluation = make_items(24, ndim=3, seed=0, prefix="f"), make_items(24, ndim=3, seed=1, prefix="e")
    loaders = layer_loaders(fit, evaluation, PATCH, batch_size=8)
    model = small_cnn(ndim=3, channels=(4, 8))
    features = collect_layer_features(model, ["stage1", "stage2"], loaders["probe_eval"])
    assert features.pooled["stage1"].shape == (24, 4) and features.pooled["stage2"].shape == (24, 8)
    table = analyse_layers({"cnn3d": model}, None, loaders, tmp_path, k=3)
    assert set(table["stage"]) == {"stage1", "stage2"}
    kl = table[table["metric"] == "counterfactual_kl"]["value"]
    assert (kl > 0).all()
    assert (tmp_path / "layer_curves.png").is_file() and (tmp_path / "layers.csv").is_file()


def test_collect_accepts_a_plain_dataloader_of_dicts():
    data = [{"image": np.random.default_rng(i).random((1, 32, 32), dtype=np.float32), "label": i % 2, "id": i}
            for i in range(10)]  # fmt: skip
    features = collect_layer_features(small_cnn(), ["stage1"], DataLoader(data, batch_size=4), targets=["label"])
    assert features.ids == tuple(str(i) for i in range(10))
    assert features.targets["label"].tolist() == [i % 2 for i in range(10)]
    assert features.logits.shape == (10, 2) and features.predictions.shape == (10,)


def test_scenario_tables_are_combined_from_the_per_model_folders(tmp_path, patch_loaders):
    """What the report does with the ``layers`` workflow's per-method folders."""
    models = {"erm": small_cnn(seed=0), "other": small_cnn(channels=(4, 8), seed=1)}
    together = analyse_layers(models, None, patch_loaders, tmp_path / "together", k=3)
    for name, model in models.items():
        analyse_layers({name: model}, None, patch_loaders, tmp_path / name, k=3)
    folders = {name: tmp_path / name for name in [*models, "missing"]}
    curves = combine_layer_outputs(folders, tmp_path / "scenario")
    assert curves == tmp_path / "scenario" / "layer_curves.png" and curves.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "scenario" / "layers.csv"), together, check_dtype=False)
    depths = pd.read_csv(tmp_path / "scenario" / "prediction_depth.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(depths, pd.read_csv(tmp_path / "together" / "prediction_depth.csv", dtype={"id": str}))
    assert combine_layer_outputs({"missing": tmp_path / "missing"}, tmp_path / "none") is None
    assert compare_scenarios({"patch": tmp_path / "scenario"}, tmp_path / "both.png") is None  # one scenario
    both = compare_scenarios({"patch": tmp_path / "scenario", "noise": tmp_path / "together"}, tmp_path / "both.png")
    assert both.read_bytes()[:4] == b"\x89PNG"
