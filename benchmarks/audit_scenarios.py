"""The audit measured on the four scenarios' models (docs/audit.md, "Measured").

Two tables, each written row by row (``--resume`` skips rows already there):

- ``scan``: ``python -m pipeline.audit --scan --artifact <scenario file>`` on each model (ERM, the
  bias-free reference, the distilled student) of the experiments that
  ``benchmarks/configs/audit_models.yaml`` trains: the top candidate and the verdict's suspect
  (the smallest change that flips as many), whether their kind and region are the artifact's (and its family), how many candidates flip the model beyond 0.15, and the suspected artifact's
  flip rate and counterfactual ΔTPR beside the experiment's own.
- ``strengths``: flip rates of a weak-to-strong ladder of generic changes (noise, contrast, gamma,
  blur, bias field; bright patches of 1/32 to 1/4 of the side at each cell) on the same models:
  whether candidates weak enough to spare the reference still find the shortcut.

The scan never sees :data:`TRUTH`: it only scores the scan's answer.

    python -m benchmarks.scenario_runs --runs benchmarks/configs/audit_models.yaml \\
        --output runs/audit_models --table benchmarks/results/audit_models.csv --resume
    python -m benchmarks.audit_scenarios scan --depth-cells 1 --resume   # 3D candidates centred in depth
    python -m benchmarks.audit_scenarios scan --scenarios localized3d --methods erm reference --resume  # 3x3x3
    python -m benchmarks.audit_scenarios strengths --scenarios localized2d diffuse2d --resume
    python -m benchmarks.audit_scenarios scan --control head --scenarios localized2d diffuse2d --resume  # with the head control
    python -m benchmarks.audit_scenarios scan --control head --depth-cells 1 --scenarios localized3d diffuse3d --resume
    python -m benchmarks.audit_scenarios scan --markdown   # the tables of docs/audit.md (--control head: the control's)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from benchmarks.scenario_validity import append_rows
from pipeline.atomic import atomic_path
from pipeline.audit.__main__ import read_artifact
from pipeline.audit.candidates import REGIONS, Candidate, region_start
from pipeline.audit.data import load_images
from pipeline.audit.model import load_audit_model
from pipeline.audit.run import run_audit
from pipeline.audit.scan import add_artifact, pair_effect, predict
from pipeline.experiment.plan import saved_config

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "bundles" / "common" / "configs" / "scenarios"
METHODS = ("erm", "reference", "distilled")
ACCUSED = 0.15
"""The issue's bar: a model without a shortcut flips at most this much on every candidate."""

TRUTH = {
    "localized2d": {"kind": "localized", "family": "patch", "region": "top_left"},
    "diffuse2d": {"kind": "diffuse", "family": "noise", "region": "global"},
    # the deformation's box starts at (8, 16, 20), 10 voxels a side (0.3 of 32): its in-plane centre
    # (13, 21) of 32 x 32 lies in the middle cell (thirds end at 10.7 and 21.3); its depth, 20-30, at the back
    "localized3d": {"kind": "localized", "family": "deformation", "region": "center", "depth": "back"},
    "diffuse3d": {"kind": "diffuse", "family": "noise", "region": "global"},
}
"""Each scenario's artifact as the scan should name it (for scoring only)."""

LADDER = {
    "noise": ("GaussianNoiseArtifact", "std", (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)),
    "contrast": ("ContrastArtifact", "factor", (0.8, 0.9, 0.95, 1.05, 1.1, 1.25)),
    "gamma": ("GammaArtifact", "gamma", (0.7, 0.9, 0.95, 1.05, 1.1, 1.5)),
    "blur": ("BlurArtifact", "sigma", (0.3, 0.5, 0.75, 1.0, 1.5)),
}
BIAS_FIELD_LADDER = (0.05, 0.1, 0.2, 0.5)
PATCH_LADDER = (1 / 32, 3 / 64, 1 / 16, 3 / 32, 1 / 8, 1 / 4)
"""Bright patch sides as fractions of the smaller in-plane side (2, 3, 4, 6, 8, 16 pixels at 64)."""


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores"


def table_command(
    table: Path, markdown_only: bool, markdown: Callable[[pd.DataFrame], str], rows: Callable[[], list[dict]]
) -> int:
    """The tail of a probe's command: print the committed ``table``'s markdown (``markdown_only``),
    or measure ``rows()`` (torch seeded 0), write them to ``table`` whole and print their markdown."""
    if markdown_only:
        print(markdown(pd.read_csv(table)))
        return 0
    torch.manual_seed(0)
    frame = pd.DataFrame(rows())
    with atomic_path(table) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")
    print(markdown(frame))
    return 0


def experiment_counterfactual(models: Path, scenario: str, method: str) -> dict[str, float]:
    """The experiment's own counterfactual flip rate and ΔTPR of ``method`` (its report's results.csv)."""
    table = pd.read_csv(models / scenario / "report" / "results.csv")
    rows = table[(table.scenario == scenario) & (table.method == method)].set_index("test_set")
    return {
        "experiment_flip_rate": float(rows.loc["cf_with", "flip_rate"]),
        "experiment_cf_delta_tpr": float(rows.loc["cf_with", "tpr"] - rows.loc["cf_without", "tpr"]),
    }


def matches(entry: Mapping[str, Any], truth: Mapping[str, str]) -> bool:
    """The candidate names the artifact: its kind, region and family (a diffuse candidate's region is
    always ``global``, so its family is what tells noise from a contrast change), and in a 3x3x3 grid
    its depth (a candidate centred in depth, ``depth_cells=1``, has none and is scored in-plane)."""
    same_depth = entry.get("depth") is None or entry["depth"] == truth.get("depth")
    return same_depth and all(entry[key] == truth[key] for key in ("kind", "region", "family"))


CENTRED_IN_DEPTH = "3x3, centred in depth"


def grid(scenario: str, depth_cells: int) -> str:
    """The localized candidates' grid of a row: ``3x3`` in 2D; ``3x3x3`` or :data:`CENTRED_IN_DEPTH` in 3D."""
    if not scenario.endswith("3d"):
        return "3x3"
    return "3x3x3" if depth_cells == 3 else CENTRED_IN_DEPTH


def audit_folder(out: Path, scenario: str, method: str, depth_cells: int, control: str = "none") -> Path:
    """One audit's folder: ``<scenario>_<method>``, with ``_depth1`` for a 3D scan centred in depth
    and ``_control-<kind>`` for a scan with a control."""
    centred = grid(scenario, depth_cells) == CENTRED_IN_DEPTH
    suffix = ("_depth1" if centred else "") + ("" if control == "none" else f"_control-{control}")
    return out / (f"{scenario}_{method}" + suffix)


def score(audit: Mapping[str, Any], scenario: str) -> dict[str, Any]:
    """An audit's answer (its ``audit.json``) scored against the scenario's artifact (:data:`TRUTH`)."""
    truth = TRUTH[scenario]
    entries = audit["candidates"]
    top = entries[0]
    suspect = next(e for e in entries if e["name"] == audit["verdict"]["suspect"])
    rank, best_true = next(((i, e) for i, e in enumerate(entries, 1) if matches(e, truth)), (None, None))
    suspected = audit["suspected"]
    return {
        "n_images": audit["data"]["n"], "n_candidates": len(entries),
        "top_name": top["name"], "top_kind": top["kind"], "top_family": top["family"], "top_region": top["region"],
        "top_flip_rate": top["flip_rate"], "top_is_artifact": matches(top, truth),
        "suspect_name": suspect["name"], "suspect_kind": suspect["kind"], "suspect_family": suspect["family"],
        "suspect_region": suspect["region"], "suspect_flip_rate": suspect["flip_rate"],
        "suspect_change_rms": suspect["change_rms"], "top_change_rms": top["change_rms"],
        "suspect_is_artifact": matches(suspect, truth),
        "true_kind": truth["kind"], "true_family": truth["family"], "true_region": truth["region"],
        "true_depth": truth.get("depth"),
        "best_true_name": None if best_true is None else best_true["name"], "best_true_rank": rank,
        "best_true_flip_rate": None if best_true is None else best_true["flip_rate"],
        "n_over_accused": sum(e["flip_rate"] > ACCUSED for e in entries),
        "suspected_flip_rate": suspected["flip_rate"], "suspected_cf_delta_tpr": suspected["delta_tpr"],
        **control_score(audit, truth),
    }  # fmt: skip


def control_score(audit: Mapping[str, Any], truth: Mapping[str, str]) -> dict[str, Any]:
    """A scan with a control: the control's kind and AUC, the verdict's score, threshold and
    displacement bound (volumes), the candidate that moves the model most by that score (and
    whether it is the artifact), how many are flagged (and how many the threshold alone would
    flag), and the best candidate of the artifact by that score."""
    control = audit.get("control") or {}
    verdict = audit["verdict"]
    score_name = verdict.get("score", "flip_rate")
    ranked = sorted(audit["candidates"], key=lambda e: (-e[score_name], e["name"]))
    rank, best_true = next(((i, e) for i, e in enumerate(ranked, 1) if matches(e, truth)), (None, None))
    return {
        "control": control.get("kind", "none"), "control_auc": control.get("auc"), "score": score_name,
        "threshold": verdict.get("threshold"), "displacement_bound": verdict.get("displacement_bound"),
        "n_flagged": len(verdict.get("flagged", [])),
        "n_beyond_threshold": len(verdict.get("flagged", [])) + len(verdict.get("spared", [])),
        "n_flagged_interval": flagged_by_interval(audit["candidates"], score_name, verdict.get("threshold")),
        "top_score_name": ranked[0]["name"], "top_score": ranked[0][score_name],
        "top_score_is_artifact": matches(ranked[0], truth),
        "best_true_score_rank": rank, "best_true_score": None if best_true is None else best_true[score_name],
    }  # fmt: skip


def flagged_by_interval(entries: Sequence[Mapping[str, Any]], score_name: str, threshold: float | None) -> int | None:
    """How many candidates the interval rule flags: the lower end of the score's 95% CI beyond
    ``threshold`` (benchmarks/configs/audit_models_seed2.yaml); None for a score without an interval
    or a verdict without a threshold."""
    if threshold is None or not any(score_name + "_ci" in e for e in entries):
        return None
    return sum(e[score_name + "_ci"][0] > threshold for e in entries if e.get(score_name + "_ci") is not None)


def training_seed(models: Path, scenario: str, method: str) -> int:
    """The seed a model was trained with: ``seed`` of the training config its experiment saved
    (``report/configs/<scenario>_<method>.yaml``; 0, the bundles' default, without one)."""
    config = models / scenario / saved_config(scenario, method)
    return int((yaml.safe_load(config.read_text()) or {}).get("seed", 0)) if config.is_file() else 0


def scan_row(
    models: Path, out: Path, scenario: str, method: str, max_images: int, depth_cells: int = 3, control: str = "none"
) -> dict[str, Any]:
    """Audit one model (scan + the scenario's own artifact) and score its answer."""
    started = time.monotonic()
    audit = run_audit(None, audit_folder(out, scenario, method, depth_cells, control), max_images=max_images,
                      artifact=read_artifact(str(SCENARIOS / f"{scenario}.yaml")), progress=False,
                      model_dir=models / scenario / scenario / method, depth_cells=depth_cells, control=control)  # fmt: skip
    seconds = time.monotonic() - started
    return {
        "scenario": scenario, "method": method, "grid": grid(scenario, depth_cells), "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(), "machine": machine(), "seed": training_seed(models, scenario, method),
        **score(audit, scenario), **experiment_counterfactual(models, scenario, method),
    }  # fmt: skip


def rescore(table: Path, out: Path) -> None:
    """Score every row of the ``scan`` table again from its saved ``audit.json`` (no model runs)."""
    rows = pd.read_csv(table).to_dict("records")
    for row in rows:
        depth_cells = 1 if row["grid"] == CENTRED_IN_DEPTH else 3
        control = row.get("control") if isinstance(row.get("control"), str) else "none"
        path = audit_folder(out, row["scenario"], row["method"], depth_cells, control) / "audit.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the audit of this row is not there to rescore")
        row.update(score(json.loads(path.read_text()), row["scenario"]))
    with atomic_path(table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f")


def ladder(spatial_shape: Sequence[int]) -> list[Candidate]:
    """The weak-to-strong ladder for images of ``spatial_shape``."""
    shape = [int(s) for s in spatial_shape]
    out = [
        Candidate(f"{family}_{value:g}", "diffuse", family, "global", params={key: value},
                  artifact={"_target_": target, key: value})
        for family, (target, key, values) in LADDER.items()
        for value in values
    ]
    out += [
        Candidate(f"bias_field_{c:g}", "diffuse", "bias_field", "global", params={"coeff_range": [0.0, c]},
                  artifact={"_target_": "BiasFieldArtifact", "coeff_range": [0.0, c]})
        for c in BIAS_FIELD_LADDER
    ]  # fmt: skip
    side = min(shape[:2])
    for pixels in sorted({max(1, round(f * side)) for f in PATCH_LADDER}):
        box = [pixels, pixels] + ([min(pixels, shape[2])] if len(shape) == 3 else [])
        out += [
            Candidate(f"patch_{pixels}px_bright@{region}", "localized", "patch", region, params={"size_px": pixels},
                      artifact={"_target_": "PatchArtifact", "size": box, "position": region_start(region, box, shape),
                                "intensity": 1.0})
            for region in REGIONS
        ]  # fmt: skip
    return out


def strength(candidate: Candidate) -> float:
    """A ladder step's strength: its one parameter (a bias field: the coefficients' upper bound)."""
    value = next(iter(candidate.params.values()))
    return float(value[-1] if isinstance(value, (list, tuple)) else value)


def strength_rows(models: Path, scenario: str, method: str, max_images: int) -> list[dict[str, Any]]:
    """Flip rate and mean probability shift of every ladder step on one model."""
    model = load_audit_model(None, model_dir=models / scenario / scenario / method)
    data = load_images(model, model.datalist, "test", max_images, 0, progress=False)
    without = predict(model.network, data.images, model.finishing)
    rows = []
    for candidate in ladder(data.images.shape[2:]):
        images = add_artifact(data.images, data.ids, candidate.artifact, model.injection_seed)
        effect = pair_effect(data.ids, data.labels, without, predict(model.network, images, model.finishing))
        rows.append({
            "scenario": scenario, "method": method, "candidate": candidate.name, "family": candidate.family,
            "region": candidate.region, "strength": strength(candidate), "n": len(data.ids),
            "flip_rate": effect["flip_rate"], "mean_prob_shift": effect["mean_prob_shift"],
            "threads": torch.get_num_threads(), "machine": machine(), "seed": training_seed(models, scenario, method),
        })  # fmt: skip
    return rows


def _flip(value: float) -> str:
    return f"{value:.3f}"


def scan_markdown(table: pd.DataFrame) -> str:
    """The scan table of docs/audit.md, rendered from the ``scan`` CSV."""
    lines = [
        "| scenario | model | grid | top by flip rate | suspect (RMS change) | names the artifact: top / suspect "
        "| best candidate of the artifact's kind, region and family: rank, flip rate | candidates above 0.15 "
        "| `--artifact`: flip rate, cf ΔTPR | experiment: flip rate, cf ΔTPR | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    yes = {True: "yes", False: "no"}
    for r in without_control(table).to_dict("records"):
        best = "none" if pd.isna(r["best_true_name"]) else (
            f"`{r['best_true_name']}`, {int(r['best_true_rank'])}, {_flip(r['best_true_flip_rate'])}"
        )
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['grid']} | `{r['top_name']}` {_flip(r['top_flip_rate'])} "
            f"| `{r['suspect_name']}` {_flip(r['suspect_flip_rate'])} ({r['suspect_change_rms']:.3f}) "
            f"| {yes[bool(r['top_is_artifact'])]} / {yes[bool(r['suspect_is_artifact'])]} | {best} "
            f"| {int(r['n_over_accused'])} of {int(r['n_candidates'])} "
            f"| {_flip(r['suspected_flip_rate'])}, {r['suspected_cf_delta_tpr']:.3f} "
            f"| {_flip(r['experiment_flip_rate'])}, {r['experiment_cf_delta_tpr']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def without_control(table: pd.DataFrame) -> pd.DataFrame:
    """The rows scanned without a control (all rows of a table written before controls)."""
    return table if "control" not in table else table[table["control"].fillna("none") == "none"]


SCORE_LABELS = {"excess_shift": "shift beyond the control (findings)", "excess_flip_rate": "flips beyond the control",
                "flip_rate": "flip rate"}  # fmt: skip


def control_markdown(table: pd.DataFrame) -> str:
    """The table of the scans with a control (docs/audit.md), rendered from the ``scan`` CSV."""
    lines = [
        "| scenario | model | grid | control (AUC) | verdict's score | candidates flagged (threshold) "
        "| flagged by the interval rule | top by the score | names the artifact "
        "| best candidate of the artifact: rank, score | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = table[table["control"].fillna("none") != "none"] if "control" in table else table.iloc[:0]
    for r in rows.to_dict("records"):
        best = "none" if pd.isna(r["best_true_score_rank"]) else f"{int(r['best_true_score_rank'])}, {r['best_true_score']:.2f}"
        auc = "-" if pd.isna(r["control_auc"]) else f"{r['control_auc']:.3f}"
        interval = "-" if pd.isna(r.get("n_flagged_interval")) else f"{int(r['n_flagged_interval'])}"
        bound = r.get("displacement_bound")
        rule = f"{r['threshold']:g}" if pd.isna(bound) else (
            f"{r['threshold']:g}, and {bound:g} per displacement; {int(r['n_beyond_threshold'])} beyond {r['threshold']:g} alone"
        )  # fmt: skip
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['grid']} | {r['control']} ({auc}) | {SCORE_LABELS[r['score']]} "
            f"| {int(r['n_flagged'])} of {int(r['n_candidates'])} ({rule}) | {interval} "
            f"| `{r['top_score_name']}` {r['top_score']:.2f} | {'yes' if r['top_score_is_artifact'] else 'no'} "
            f"| {best} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def weakest_moving(rows: pd.DataFrame, threshold: float = ACCUSED) -> str:
    """The weakest step of one family that flips more than ``threshold`` ("0.05 (0.480)"), weakest
    meaning nearest to no change (a factor's distance from 1 on a log scale); "none (largest x)"."""
    moving = rows[rows.flip_rate > threshold]
    if moving.empty:
        return f"none ({_flip(rows.flip_rate.max())})"
    family = rows.family.iloc[0]
    if family == "patch":
        size = moving.strength.min()
        first = moving[moving.strength == size].sort_values("flip_rate", ascending=False).iloc[0]
        return f"{int(size)} px @{first.region} ({_flip(first.flip_rate)})"
    distance = moving.strength.map(lambda v: abs(np.log(v)) if family in ("contrast", "gamma") else v)
    first = moving.loc[distance.idxmin()]
    return f"{first.strength:g} ({_flip(first.flip_rate)})"


STRENGTH_COLUMNS = ("noise", "contrast", "gamma", "blur", "bias_field", "patch")


def strengths_markdown(table: pd.DataFrame) -> str:
    """The ladder table of docs/audit.md: per model, the weakest step of each family that flips
    more than 0.15 of its predictions."""
    lines = [
        "| scenario | model | " + " | ".join(c.replace("_", " ") for c in STRENGTH_COLUMNS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in STRENGTH_COLUMNS) + " |",
    ]
    for (scenario, method), rows in table.groupby(["scenario", "method"], sort=False):
        cells = [weakest_moving(rows[rows.family == family]) for family in STRENGTH_COLUMNS]
        lines.append(f"| {scenario} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def done(table: Path, keys: Sequence[str]) -> set[tuple]:
    if not table.is_file():
        return set()
    rows = pd.read_csv(table)
    if "control" in keys:
        rows["control"] = rows["control"].fillna("none") if "control" in rows else "none"
    return set(map(tuple, rows[list(keys)].astype(str).to_numpy()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_scenarios", description=__doc__.split("\n\n")[0])
    parser.add_argument("table_kind", choices=("scan", "strengths"))
    parser.add_argument("--models", default="runs/audit_models", help="output of benchmarks/configs/audit_models.yaml")
    parser.add_argument("--out", default="runs/audit", help="one audit folder per model (scan)")
    parser.add_argument("--table", help="CSV (default benchmarks/results/audit_<kind>.csv)")
    parser.add_argument("--scenarios", nargs="+", default=list(TRUTH))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--depth-cells", type=int, choices=(1, 3), default=3,
                        help="scan, 3D: localized candidates on a 3x3x3 grid (3) or centred in depth (1)")
    parser.add_argument("--control", choices=("none", "head", "retrain"), default="none",
                        help="scan: the audit's control (default none: the raw flip rates, as the first rows)")
    parser.add_argument("--max-images", type=int, help="test images per model (default: scan 1000, strengths 200)")
    parser.add_argument("--resume", action="store_true", help="skip models already in the table (scan: the same scenario, method and grid)")
    parser.add_argument("--rescore", action="store_true", help="scan: score the table's rows again from their audit.json")
    parser.add_argument("--markdown", action="store_true", help="print the table's markdown (docs/audit.md) and exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(TRUTH))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(TRUTH)}")
    models = Path(args.models)
    table = Path(args.table or f"benchmarks/results/audit_{args.table_kind}.csv")
    if args.rescore:
        if args.table_kind != "scan" or not table.is_file():
            parser.error("--rescore needs the scan table and its audits (run `scan` first)")
        rescore(table, Path(args.out))
        return 0
    if args.markdown:
        if not table.is_file():
            parser.error(f"no table {table}: run `{args.table_kind}` first")
        if args.table_kind == "scan":
            frame = pd.read_csv(table)
            print(control_markdown(frame) if args.control != "none" else scan_markdown(frame))
        else:
            print(strengths_markdown(pd.read_csv(table)))
        return 0
    keys = ("scenario", "method", "grid", "control") if args.table_kind == "scan" else ("scenario", "method")
    finished = done(table, keys) if args.resume else set()
    if not args.resume and table.is_file():
        table.unlink()
    for scenario in args.scenarios:
        for method in args.methods:
            key = (scenario, method) + ((grid(scenario, args.depth_cells), args.control) if args.table_kind == "scan" else ())
            if key in finished:
                continue
            if not (models / scenario / scenario / method / "models" / "model.pt").is_file():
                parser.error(f"no trained {method} of {scenario} under {models}: run audit_models.yaml first")
            torch.manual_seed(0)
            np.random.seed(0)
            if args.table_kind == "scan":
                rows = [scan_row(models, Path(args.out), scenario, method, args.max_images or 1000, args.depth_cells,
                                 args.control)]
            else:
                rows = strength_rows(models, scenario, method, args.max_images or 200)
            append_rows(table, rows)
            print(f"{scenario} {method}: {len(rows)} row(s) -> {table}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
