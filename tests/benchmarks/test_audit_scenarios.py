"""The audit benchmark's scoring: the experiment's own counterfactual numbers, the truth check, the ladder."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import audit_scenarios
from pipeline.audit.candidates import REGIONS
from pipeline.transforms import build_artifact


def test_experiment_counterfactual_reads_the_method_rows_of_the_report(tmp_path):
    report = tmp_path / "localized2d" / "report"
    report.mkdir(parents=True)
    pd.DataFrame([
        {"scenario": "localized2d", "method": "erm", "test_set": "cf_with", "flip_rate": 0.837, "tpr": 0.996},
        {"scenario": "localized2d", "method": "erm", "test_set": "cf_without", "flip_rate": 0.837, "tpr": 0.242},
        {"scenario": "localized2d", "method": "reference", "test_set": "cf_with", "flip_rate": 0.113, "tpr": 0.962},
        {"scenario": "localized2d", "method": "reference", "test_set": "cf_without", "flip_rate": 0.113, "tpr": 0.886},
    ]).to_csv(report / "results.csv", index=False)  # fmt: skip
    erm = audit_scenarios.experiment_counterfactual(tmp_path, "localized2d", "erm")
    assert erm["experiment_flip_rate"] == pytest.approx(0.837)
    assert erm["experiment_cf_delta_tpr"] == pytest.approx(0.754)
    reference = audit_scenarios.experiment_counterfactual(tmp_path, "localized2d", "reference")
    assert reference["experiment_cf_delta_tpr"] == pytest.approx(0.076)


def test_a_candidate_names_the_artifact_only_with_its_kind_region_and_family():
    truth = audit_scenarios.TRUTH["localized2d"]
    patch = {"kind": "localized", "region": "top_left", "family": "patch"}
    assert audit_scenarios.matches(patch, truth)
    assert not audit_scenarios.matches({**patch, "region": "top"}, truth)
    assert not audit_scenarios.matches({**patch, "family": "text"}, truth)


def test_in_a_3x3x3_grid_the_depth_must_match_too_and_a_centred_candidate_is_scored_in_plane():
    truth = audit_scenarios.TRUTH["localized3d"]
    deformation = {"kind": "localized", "region": "center", "family": "deformation"}
    assert audit_scenarios.matches({**deformation, "depth": "back"}, truth)
    assert not audit_scenarios.matches({**deformation, "depth": "front"}, truth)
    assert audit_scenarios.matches({**deformation, "depth": None}, truth)  # depth_cells=1
    assert audit_scenarios.matches(deformation, truth)  # audits written before the depth field
    assert audit_scenarios.grid("localized2d", 3) == "3x3"
    assert audit_scenarios.grid("localized3d", 3) == "3x3x3"
    assert audit_scenarios.grid("diffuse3d", 1) == "3x3, centred in depth"
    out = audit_scenarios.Path("runs/audit")
    assert audit_scenarios.audit_folder(out, "localized3d", "erm", 1).name == "localized3d_erm_depth1"
    assert audit_scenarios.audit_folder(out, "localized3d", "erm", 3).name == "localized3d_erm"
    assert audit_scenarios.audit_folder(out, "localized2d", "erm", 1).name == "localized2d_erm"
    assert not audit_scenarios.matches({"kind": "diffuse", "region": "global", "family": "patch"}, truth)
    noise = {"kind": "diffuse", "region": "global", "family": "noise"}
    assert audit_scenarios.matches(noise, audit_scenarios.TRUTH["diffuse3d"])
    assert not audit_scenarios.matches({**noise, "family": "blur"}, audit_scenarios.TRUTH["diffuse3d"])


@pytest.mark.parametrize("shape, sizes", [((64, 64), [2, 3, 4, 6, 8, 16]), ((32, 32, 32), [1, 2, 3, 4, 8])])
def test_the_ladder_is_generic_and_builds(shape, sizes):
    ladder = audit_scenarios.ladder(shape)
    patches = [c for c in ladder if c.family == "patch"]
    assert sorted({c.params["size_px"] for c in patches}) == sizes
    assert {c.region for c in patches} == set(REGIONS)
    assert len({c.name for c in ladder}) == len(ladder)
    for candidate in ladder:
        build_artifact(dict(candidate.artifact))
    bias = [audit_scenarios.strength(c) for c in ladder if c.family == "bias_field"]
    assert bias == list(audit_scenarios.BIAS_FIELD_LADDER)  # a number (the coefficients' bound), not a range
    noise = [c.params["std"] for c in ladder if c.family == "noise"]
    assert noise == sorted(noise) and noise[0] < 0.02 < noise[-1]  # weaker and stronger than any scenario's


def test_main_refuses_a_missing_model_and_an_unknown_scenario(tmp_path, capsys):
    with pytest.raises(SystemExit):
        audit_scenarios.main(["scan", "--models", str(tmp_path), "--table", str(tmp_path / "t.csv")])
    assert "no trained erm of localized2d" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit_scenarios.main(["scan", "--scenarios", "elsewhere", "--table", str(tmp_path / "t.csv")])
    assert "unknown scenarios ['elsewhere']" in capsys.readouterr().err


def test_resume_skips_the_models_already_in_the_table(tmp_path, monkeypatch):
    table = tmp_path / "t.csv"
    audit_scenarios.append_rows(table, [{"scenario": "localized2d", "method": "erm", "flip_rate": 0.8}])
    audit_scenarios.append_rows(table, [{"scenario": "localized2d", "method": "reference", "flip_rate": 0.1}] * 2)
    assert audit_scenarios.done(table, ("scenario", "method")) == {("localized2d", "erm"), ("localized2d", "reference")}
    measured = []
    monkeypatch.setattr(audit_scenarios, "strength_rows", lambda models, s, m, n: measured.append((s, m)) or [
        {"scenario": s, "method": m, "flip_rate": 0.0}
    ])  # fmt: skip
    for method in ("erm", "reference", "distilled"):
        model = tmp_path / "models" / "localized2d" / "localized2d" / method / "models"
        model.mkdir(parents=True)
        (model / "model.pt").write_bytes(b"")
    argv = ["strengths", "--models", str(tmp_path / "models"), "--scenarios", "localized2d", "--table", str(table)]
    audit_scenarios.main(argv + ["--resume"])
    assert measured == [("localized2d", "distilled")]
    assert len(pd.read_csv(table)) == 4
    audit_scenarios.main(argv)  # without --resume: a new table
    assert measured[1:] == [("localized2d", m) for m in ("erm", "reference", "distilled")]
    assert len(pd.read_csv(table)) == 3


def _audit(entries, suspect):
    return {"data": {"n": 1000}, "candidates": entries, "verdict": {"suspect": suspect},
            "suspected": {"flip_rate": 0.837, "delta_tpr": 0.754}}  # fmt: skip


def _candidate(name, kind, family, region, rate, change=0.05):
    return {"name": name, "kind": kind, "family": family, "region": region, "flip_rate": rate, "change_rms": change}


ENTRIES = [
    _candidate("blur_sigma1.5", "diffuse", "blur", "global", 0.876, 0.08),
    _candidate("blur_sigma0.5", "diffuse", "blur", "global", 0.861, 0.044),
    _candidate("patch_8px_bright@top", "localized", "patch", "top", 0.5),
    _candidate("patch_16px_bright@top_left", "localized", "patch", "top_left", 0.40, 0.17),
    _candidate("noise_std0.01", "diffuse", "noise", "global", 0.01),
]


def test_score_names_the_top_the_suspect_and_the_artifacts_best_rank():
    row = audit_scenarios.score(_audit(ENTRIES, "blur_sigma0.5"), "localized2d")
    assert (row["top_name"], row["top_is_artifact"]) == ("blur_sigma1.5", False)
    assert (row["suspect_name"], row["suspect_change_rms"], row["suspect_is_artifact"]) == ("blur_sigma0.5", 0.044, False)
    assert (row["best_true_name"], row["best_true_rank"], row["best_true_flip_rate"]) == ("patch_16px_bright@top_left", 4, 0.40)
    assert row["n_over_accused"] == 4 and row["n_candidates"] == 5
    assert (row["suspected_flip_rate"], row["suspected_cf_delta_tpr"]) == (0.837, 0.754)
    noise = audit_scenarios.score(_audit(ENTRIES, "noise_std0.01"), "diffuse2d")
    assert noise["suspect_is_artifact"] and noise["best_true_rank"] == 5
    none = audit_scenarios.score(_audit(ENTRIES, "blur_sigma0.5"), "localized3d")
    assert none["best_true_name"] is None and none["best_true_rank"] is None


def test_rescore_rereads_each_rows_audit_and_markdown_renders_the_table(tmp_path):
    import json

    table, out = tmp_path / "scan.csv", tmp_path / "audit"
    (out / "localized2d_erm").mkdir(parents=True)
    (out / "localized2d_erm" / "audit.json").write_text(json.dumps(_audit(ENTRIES, "blur_sigma0.5")))
    stale = {**audit_scenarios.score(_audit(ENTRIES[::-1], "noise_std0.01"), "localized2d"),
             "scenario": "localized2d", "method": "erm", "grid": "3x3", "seconds": 150.0,
             "experiment_flip_rate": 0.837, "experiment_cf_delta_tpr": 0.754}  # fmt: skip
    audit_scenarios.append_rows(table, [stale])
    audit_scenarios.main(["scan", "--rescore", "--table", str(table), "--out", str(out)])
    row = pd.read_csv(table).iloc[0]
    assert row["top_name"] == "blur_sigma1.5" and row["suspect_name"] == "blur_sigma0.5" and row["seconds"] == 150
    text = audit_scenarios.scan_markdown(pd.read_csv(table))
    assert text.splitlines()[2] == (
        "| localized2d | erm | 3x3 | `blur_sigma1.5` 0.876 | `blur_sigma0.5` 0.861 (0.044) | no / no "
        "| `patch_16px_bright@top_left`, 4, 0.400 | 4 of 5 | 0.837, 0.754 | 0.837, 0.754 | 150 |"
    )
    (out / "localized2d_erm" / "audit.json").unlink()
    with pytest.raises(FileNotFoundError, match="localized2d_erm"):
        audit_scenarios.rescore(table, out)


def test_the_strength_table_gives_the_weakest_step_of_each_family_that_moves_the_model():
    def rows(family, steps, region="global"):
        return pd.DataFrame([{"family": family, "strength": s, "flip_rate": f, "region": region} for s, f in steps])

    assert audit_scenarios.weakest_moving(rows("noise", [(0.01, 0.02), (0.05, 0.30), (0.1, 0.50)])) == "0.05 (0.300)"
    contrast = rows("contrast", [(0.8, 0.6), (0.95, 0.2), (1.05, 0.3), (1.25, 0.5)])
    assert audit_scenarios.weakest_moving(contrast) == "1.05 (0.300)"  # |log 1.05| < |log 0.95|
    patches = pd.concat([rows("patch", [(4, 0.33)], "center"), rows("patch", [(4, 0.10)], "top"),
                         rows("patch", [(2, 0.1), (8, 0.6)], "top_left")])  # fmt: skip
    assert audit_scenarios.weakest_moving(patches) == "4 px @center (0.330)"
    assert audit_scenarios.weakest_moving(rows("blur", [(0.3, 0.05), (1.5, 0.12)])) == "none (0.120)"


def test_the_docs_quote_the_committed_audit_tables():
    """docs/audit.md's tables are what `--markdown` renders from the committed CSVs."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    docs = (repo / "docs" / "audit.md").read_text()
    results = repo / "benchmarks" / "results"
    assert audit_scenarios.scan_markdown(pd.read_csv(results / "audit_scan.csv")) in docs
    assert audit_scenarios.control_markdown(pd.read_csv(results / "audit_scan.csv")) in docs
    seed1 = audit_scenarios.control_markdown(pd.read_csv(results / "audit_scan_seed1.csv"))
    assert "\n".join("  " + line for line in seed1.splitlines()) in docs
    seed2 = audit_scenarios.control_markdown(pd.read_csv(results / "audit_scan_seed2.csv"))
    assert "\n".join("  " + line for line in seed2.splitlines()) in docs
    for fresh in ("audit_scan_seed4.csv", "audit_scan_seed5.csv"):
        table = audit_scenarios.control_markdown(pd.read_csv(results / fresh))
        assert "\n".join("  " + line for line in table.splitlines()) in docs, fresh
    assert audit_scenarios.strengths_markdown(pd.read_csv(results / "audit_strengths.csv")) in docs


def test_a_scan_with_a_control_is_scored_by_the_verdicts_score_and_kept_apart(tmp_path):
    shifts = (0.2, 0.1, 1.5, 2.5, 0.0)
    shifted = [dict(e, excess_shift=s, excess_shift_ci=[s - 0.6, s + 0.6]) for e, s in zip(ENTRIES, shifts)]
    audit = {**_audit(shifted, "blur_sigma0.5"), "control": {"kind": "head", "auc": 0.97},
             "verdict": {"suspect": "blur_sigma0.5", "score": "excess_shift", "threshold": 1.0,
                         "flagged": ["patch_8px_bright@top", "patch_16px_bright@top_left"]}}  # fmt: skip
    row = audit_scenarios.score(audit, "localized2d")
    assert (row["control"], row["control_auc"], row["score"], row["n_flagged"]) == ("head", 0.97, "excess_shift", 2)
    assert (row["top_score_name"], row["top_score"], row["top_score_is_artifact"]) == ("patch_16px_bright@top_left", 2.5, True)
    assert (row["best_true_score_rank"], row["best_true_score"]) == (1, 2.5)
    # the interval rule: only 2.5 (CI 1.9-3.1) has its lower end beyond 1.0; 1.5 (0.9-2.1) does not
    assert row["n_flagged_interval"] == 1
    # a scan without a control keeps the flip rate, and its folder and key
    plain = audit_scenarios.score(_audit(ENTRIES, "blur_sigma0.5"), "localized2d")
    assert (plain["control"], plain["score"], plain["top_score_name"]) == ("none", "flip_rate", "blur_sigma1.5")
    out = audit_scenarios.Path("runs/audit")
    assert audit_scenarios.audit_folder(out, "localized2d", "erm", 3, "head").name == "localized2d_erm_control-head"
    assert audit_scenarios.audit_folder(out, "localized3d", "erm", 1, "head").name == "localized3d_erm_depth1_control-head"
    table = tmp_path / "scan.csv"
    audit_scenarios.append_rows(table, [{"scenario": "localized2d", "method": "erm", "grid": "3x3"}])  # before controls
    audit_scenarios.append_rows(table, [{"scenario": "localized2d", "method": "erm", "grid": "3x3", **row,
                                         "n_candidates": 5, "seconds": 90.0}])  # fmt: skip
    keys = ("scenario", "method", "grid", "control")
    assert audit_scenarios.done(table, keys) == {("localized2d", "erm", "3x3", "none"), ("localized2d", "erm", "3x3", "head")}
    frame = pd.read_csv(table)
    lines = audit_scenarios.control_markdown(frame).splitlines()
    assert len(lines) == 3 and lines[2] == (
        "| localized2d | erm | 3x3 | head (0.970) | shift beyond the control (findings) | 2 of 5 (1) | 1 "
        "| `patch_16px_bright@top_left` 2.50 | yes | 1, 2.50 | 90 |"
    )
    assert len(audit_scenarios.without_control(frame)) == 1


def test_a_volume_scans_row_counts_the_flags_and_what_the_threshold_alone_would_flag():
    shifted = [dict(e, excess_shift=s, excess_shift_ci=[s - 0.1, s + 0.1]) for e, s in zip(ENTRIES, (0.2, 0.1, 1.5, 3.0, 0.0))]
    audit = {**_audit(shifted, "blur_sigma0.5"), "control": {"kind": "head", "auc": 0.84},
             "verdict": {"suspect": "patch_8px_bright@top", "score": "excess_shift", "threshold": 1.0,
                         "displacement_bound": 0.7, "flagged": ["patch_8px_bright@top"],
                         "spared": ["patch_16px_bright@top_left"]}}  # fmt: skip
    row = audit_scenarios.score(audit, "localized3d")
    assert (row["n_flagged"], row["n_beyond_threshold"], row["displacement_bound"]) == (1, 2, 0.7)
    line = audit_scenarios.control_markdown(pd.DataFrame([{**row, "scenario": "localized3d", "method": "reference",
                                                           "grid": "3x3", "n_candidates": 5, "seconds": 200.0}]))  # fmt: skip
    assert "| 1 of 5 (1, and 0.7 per displacement; 2 beyond 1 alone) |" in line.splitlines()[2]


def test_a_rows_seed_is_the_one_its_model_was_trained_with(tmp_path):
    configs = tmp_path / "localized2d" / "report" / "configs"
    configs.mkdir(parents=True)
    (configs / "localized2d_erm.yaml").write_text("network_name: small_cnn\nseed: 1\n")
    assert audit_scenarios.training_seed(tmp_path, "localized2d", "erm") == 1
    (configs / "localized2d_erm.yaml").write_text("network_name: small_cnn\n")
    assert audit_scenarios.training_seed(tmp_path, "localized2d", "erm") == 0  # the bundles' default
    assert audit_scenarios.training_seed(tmp_path, "diffuse2d", "erm") == 0
