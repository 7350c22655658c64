"""The audit end to end on a tiny shortcut model: the scan finds the patch, a suspected artifact is
measured as the evaluation protocol measures it, bad input gets a clear error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from audit_helpers import NETWORK_CONFIG, PATCH, SIZE, strip_labels, train_shortcut_model, write_yaml

from pipeline.audit.__main__ import main
from pipeline.audit.model import load_audit_model
from pipeline.audit.run import run_audit
from pipeline.engine.evaluation import evaluation_dataset
from pipeline.evaluation.protocol import counterfactual_delta_tpr, flip_rate, summarize

FAST = {"families": ["patch", "noise"], "screen_images": 16, "confirm": 2, "occlusion_per_class": 2,
        "control": "none", "progress": False}  # fmt: skip


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    """(datalist, network config, checkpoint) of small_cnn trained with a 4-pixel bright patch
    in the top-left corner of every positive."""
    from data_prep.synthetic2d import generate

    root = tmp_path_factory.mktemp("audit")
    datalist = generate(root / "data", n=160, size=SIZE, seed=0, teacher_size=0, val_fraction=0.1,
                        test_fraction=0.25, progress=False, verbose=False)  # fmt: skip
    config = write_yaml(NETWORK_CONFIG, root / "network.yaml")
    return datalist, config, train_shortcut_model(datalist, root)


def audit(shortcut, out, **options):
    datalist, config, checkpoint = shortcut
    return run_audit(options.pop("datalist", datalist), out, checkpoint=checkpoint, configs=[config],
                     **{**FAST, **options})  # fmt: skip


def test_the_scan_ranks_the_patch_in_its_corner_first_and_writes_the_report(shortcut, tmp_path):
    result = audit(shortcut, tmp_path)
    saved = json.loads((tmp_path / "audit.json").read_text())
    candidates = saved["candidates"]
    rates = [c["flip_rate"] for c in candidates]
    assert rates == sorted(rates, reverse=True)
    top = candidates[0]
    assert (top["kind"], top["region"], top["family"]) == ("localized", "top_left", "patch")
    assert top["params"]["intensity"] == 1.0
    assert top["flip_rate"] > 0.3 and top["delta_tpr"] is not None
    assert {"name", "kind", "region", "params", "flip_rate", "delta_tpr", "mean_prob_shift", "change_rms"} <= set(top)
    # how much each candidate changes the images: a bigger mark or stronger noise, a bigger change
    change = {c["name"]: c["change_rms"] for c in candidates}
    assert 0 < change["patch_4px_bright@top_left"] < change["patch_8px_bright@top_left"]
    assert 0 < change["noise_std0.01"] < change["noise_std0.03"] < change["noise_std0.1"]
    # the patch far from the corner moves the model much less
    far = next(c for c in candidates if c["name"] == top["name"].replace("top_left", "bottom_right"))
    assert far["flip_rate"] < top["flip_rate"] - 0.2
    # ... so it stands out from the same mark on the rest of the grid; diffuse candidates have no regions
    assert top["region_excess"] > 0.2 and top["region_excess"] <= top["flip_rate"]
    assert all(c["region_excess"] is None for c in candidates if c["kind"] == "diffuse")
    assert result["verdict"]["flagged"][0] == top["name"]
    assert saved["occlusion"]["top_region"]["1"] == "top_left"
    text = (tmp_path / "audit.md").read_text()
    assert "Suspected shortcut" in text and top["name"] in text
    for figure in saved["figures"].values():
        assert (tmp_path / figure).is_file()


def test_a_suspected_artifact_gives_the_protocols_counterfactual_numbers(shortcut, tmp_path):
    datalist, config, _ = shortcut
    result = audit(shortcut, tmp_path, artifact=PATCH, do_scan=False)["suspected"]
    # the experiment's way: the evaluate workflow's datasets (injection "always" / "never"), then the protocol
    model = load_audit_model(datalist, checkpoint=shortcut[2], configs=[config])
    injection = {"keys": "image", "artifact": PATCH, "rates": [0.05, 0.95], "seed": 0}
    tables = {}
    for name, mode, bias in (("cf_with", "always", 1), ("cf_without", "never", 0)):
        dataset = evaluation_dataset(datalist, "test", mode, model.preprocessing, injection, model.finishing)
        items = [dataset[i] for i in range(len(dataset))]
        with torch.no_grad():
            logits = model.network(
                torch.stack([torch.as_tensor(i["image"]).as_subclass(torch.Tensor) for i in items])
            )
        probs = torch.softmax(logits, 1)[:, 1].numpy()
        tables[name] = pd.DataFrame({"id": [str(i["id"]) for i in items], "label": [i["label"] for i in items],
                                     "bias": bias, "prob": probs, "pred": (probs >= 0.5).astype(int)})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = {name: summarize(table) for name, table in tables.items()}
    assert result["flip_rate"] == pytest.approx(flip_rate(tables["cf_with"], tables["cf_without"]))
    assert result["delta_tpr"] == pytest.approx(counterfactual_delta_tpr(metrics))
    assert result["with"]["auc"] == pytest.approx(metrics["cf_with"]["auc"])
    assert result["without"]["auc"] == pytest.approx(metrics["cf_without"]["auc"])
    assert [row["stage"] for row in result["stage_kl"]] == ["net.layer_0", "net.layer_1"]
    assert all(row["counterfactual_kl"] >= 0 for row in result["stage_kl"])
    assert (tmp_path / result["saliency"]).is_file()


def test_without_labels_it_reports_probability_shifts_only_and_says_so(shortcut, tmp_path):
    datalist = strip_labels(shortcut[0], tmp_path, keep=0)
    result = audit(shortcut, tmp_path / "out", datalist=datalist, artifact=PATCH)
    assert result["data"]["labelled"] is False
    assert all(c["delta_tpr"] is None and c["prob_shift_by_class"] == {} for c in result["candidates"])
    assert result["suspected"]["delta_tpr"] is None and "with" not in result["suspected"]
    assert result["suspected"]["mean_prob_shift"] > 0.1  # the patch still pushes towards class 1
    assert "have no labels" in (tmp_path / "out" / "audit.md").read_text()
    partly = strip_labels(shortcut[0], tmp_path, keep=20)
    result = audit(shortcut, tmp_path / "partly", datalist=partly, artifact=PATCH, do_scan=False)
    assert result["data"]["n_labelled"] == 20 and result["suspected"]["delta_tpr"] is not None


def cli(shortcut, out, *extra):
    datalist, config, checkpoint = shortcut
    return main(["--checkpoint", str(checkpoint), "--config", str(config), "--datalist", str(datalist),
                 "--out", str(out), "--no-progress", *extra])  # fmt: skip


def test_the_head_control_is_the_default_and_none_turns_it_off(shortcut, tmp_path):
    fast = ["--scan", "--families", "noise", "--screen-images", "8", "--confirm", "0"]
    assert cli(shortcut, tmp_path / "default", *fast) == 0
    saved = json.loads((tmp_path / "default" / "audit.json").read_text())
    assert "auc" in saved["control"] or "reason" in saved["control"]
    assert cli(shortcut, tmp_path / "off", *fast, "--control", "none") == 0
    saved = json.loads((tmp_path / "off" / "audit.json").read_text())
    assert "control" not in saved and saved["verdict"]["score"] == "flip_rate"


def test_bad_input_gets_a_clear_error(shortcut, tmp_path, capsys):
    datalist, config, checkpoint = shortcut
    assert cli((datalist, config, tmp_path / "none.pt"), tmp_path, "--scan") == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"network": torch.nn.Linear(3, 2).state_dict()}, other)
    assert cli((datalist, config, other), tmp_path, "--scan") == 2
    assert "does not fit the network" in capsys.readouterr().err
    assert cli(shortcut, tmp_path, "--artifact", "{_target_: PatchArtifact, size: -3}") == 2
    assert "--artifact: the transform spec does not build: size must be positive" in capsys.readouterr().err
    assert cli(shortcut, tmp_path, "--artifact", "{_target_: [") == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert cli(shortcut, tmp_path, "--artifact", "{size: 3}") == 2
    assert "expected a transform spec" in capsys.readouterr().err
    unresized = write_yaml({**NETWORK_CONFIG, "image_size": [40, 40], "preprocessing": [
        {"_target_": "pipeline.engine.image_io.load_image", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"}, {"_target_": "ScaleIntensityd", "keys": "image"}]},
        tmp_path / "unresized.yaml")  # fmt: skip
    assert cli((datalist, unresized, checkpoint), tmp_path, "--scan") == 2
    assert (
        "is [32, 32] after preprocessing but the network's image_size is [40, 40]" in capsys.readouterr().err
    )
    assert (
        cli(shortcut, tmp_path, "--scan", "--set", "image_size=[40,40]") == 2
    )  # resized to 40: too big for it
    assert "the network cannot take image" in capsys.readouterr().err
    assert cli(shortcut, tmp_path, "--scan", "--role", "nope") == 2
    assert "has no non-empty role 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(shortcut, tmp_path)  # neither --scan nor --artifact
    assert "nothing to audit" in capsys.readouterr().err


def test_a_model_folder_without_a_config_names_what_it_looked_for(tmp_path):
    (tmp_path / "run" / "models").mkdir(parents=True)
    with pytest.raises(ValueError, match="cannot find the config the model was trained with"):
        load_audit_model(tmp_path / "x.json", model_dir=tmp_path / "run")


def test_the_cli_writes_a_ranked_json(shortcut, tmp_path):
    assert (
        cli(shortcut, tmp_path, "--scan", "--families", "patch", "--screen-images", "16", "--confirm", "1")
        == 0
    )
    names = [c["name"] for c in json.loads((tmp_path / "audit.json").read_text())["candidates"]]
    assert (
        len(names) == 54 and names[0].startswith("patch_") and np.all([n.startswith("patch") for n in names])
    )


def test_change_rms_is_the_mean_over_images_of_each_images_rms_change():
    from pipeline.audit.scan import change_rms

    originals = torch.zeros(2, 1, 4, 4)
    changed = originals.clone()
    changed[0, 0, 0, :] = 1.0  # 4 of 16 pixels by 1: RMS 0.5
    changed[1] = 0.25  # every pixel by 0.25: RMS 0.25
    assert change_rms(originals, changed) == pytest.approx(0.375)
    assert change_rms(originals, originals) == 0.0


def _entry(name, rate, ci, change, kind="diffuse", region="global"):
    return {"name": name, "kind": kind, "region": region, "flip_rate": rate, "flip_rate_ci": list(ci),
            "change_rms": change}  # fmt: skip


def test_the_suspect_is_the_smallest_change_that_flips_as_many_as_the_strongest():
    from pipeline.audit.report import smallest_sufficient, verdict

    entries = [
        _entry("gamma_0.7", 0.875, (0.85, 0.90), 0.10),
        _entry("patch@top_left", 0.86, (0.80, 0.88), 0.07, "localized", "top_left"),  # tied: CI reaches 0.875
        _entry("noise_0.01", 0.84, (0.81, 0.87), 0.01),  # smaller still, but its CI stays below 0.875
        _entry("blur_0.5", 0.30, (0.25, 0.35), 0.005),
    ]
    assert smallest_sufficient(entries)["name"] == "patch@top_left"
    said = verdict(entries, threshold=0.2)
    assert said["suspect"] == "patch@top_left" and said["flagged"] == ["gamma_0.7", "patch@top_left", "noise_0.01", "blur_0.5"]
    assert "`gamma_0.7`" in said["text"] and "smallest change that moves it as much" in said["text"]
    assert "`patch@top_left` (localized, region top_left, flip rate 0.860, RMS change 0.070 against 0.100)" in said["text"]
    # the strongest is also the smallest of its ties: named once
    alone = verdict([_entry("noise_0.03", 0.75, (0.7, 0.8), 0.03), _entry("gamma_0.7", 0.74, (0.7, 0.8), 0.1)], 0.2)
    assert alone["suspect"] == "noise_0.03" and "smallest change" not in alone["text"]
    assert verdict([], 0.2)["suspect"] is None and smallest_sufficient([]) is None
    quiet = verdict([_entry("noise_0.03", 0.1, (0.05, 0.15), 0.03)], 0.2)
    assert quiet["flagged"] == [] and "No candidate moves the model" in quiet["text"]


def test_region_excess_is_the_flip_rate_above_the_same_marks_median_over_regions():
    from pipeline.audit.scan import with_region_excess

    def mark(region, rate, size=4, family="patch"):
        return {"name": f"{family}{size}@{region}", "kind": "localized", "family": family, "region": region,
                "params": {"size_px": size}, "flip_rate": rate}  # fmt: skip

    entries = [mark("top_left", 0.9), mark("top", 0.1), mark("center", 0.2), mark("top_left", 0.5, size=8),
               mark("top", 0.5, size=8), {"name": "blur", "kind": "diffuse", "family": "blur", "region": "global",
               "params": {"sigma": 1.0}, "flip_rate": 0.8}]  # fmt: skip
    excess = {e["name"]: e["region_excess"] for e in with_region_excess(entries)}
    assert excess["patch4@top_left"] == pytest.approx(0.7) and excess["patch4@top"] == pytest.approx(-0.1)
    assert excess["patch8@top_left"] == pytest.approx(0.0)  # the same everywhere: no place stands out
    assert excess["blur"] is None
