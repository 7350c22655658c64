"""Does the head control still read the finding under the candidates that accuse a model? One row
per model and examined candidate.

The audit scores a candidate by the model's log-odds shift beyond its control's (a linear head on
the model's own features, fitted on the audited images' labels; docs/audit.md). The strongest
diffuse candidates (bias field 0.5, noise 0.1) take 3D volumes far from the images the head was
fitted on, where the model and the control may simply extrapolate apart. This probe rebuilds each
scan's control exactly as the audit did, measures again the candidates of its ``audit.json`` with
the largest excess (every one beyond ``--from-score``, and the top ``--top``, at most ``--cap``), on
the same images, and writes beside the rerun excess the model's and the control's AUC on the
labelled images with and without the candidate (a control whose AUC falls under a candidate no
longer reads the finding there, and the excess it leaves is no evidence of a shortcut), and how far
the candidate moves the head features (``feature_displacement``: the mean distance between each
image's features with and without it, over the RMS distance of the clean images' features to their
mean) with the excess per unit of it (a shortcut moves the model far for a small change of its features).

    python -m benchmarks.audit_control_validity --models runs/audit_models --audits runs/audit
    python -m benchmarks.audit_control_validity --models runs/audit_models_seed2 --audits runs/audit_seed2 --append
    python -m benchmarks.audit_control_validity --markdown
    python -m benchmarks.audit_control_validity --naming benchmarks/results/audit_control_validity.csv \\
        benchmarks/results/audit_control_validity_seed3.csv
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from benchmarks.audit_scenarios import (
    METHODS,
    TRUTH,
    audit_folder,
    machine,
    matches,
    table_command,
    training_seed,
)
from pipeline.audit.candidates import candidate_library
from pipeline.audit.control import (
    capture_head,
    excess_effect,
    feature_displacement,
    feature_spread,
    finding_separation,
    fit_head_control,
    per_displacement,
)
from pipeline.audit.data import UNLABELLED, load_images, subsample
from pipeline.audit.model import load_audit_model
from pipeline.audit.report import THRESHOLDS
from pipeline.audit.scan import add_artifact, forward
from pipeline.evaluation.metrics import auc


def examined(entries: Sequence[Mapping], from_score: float, top: int, cap: int) -> list[Mapping]:
    """The entries with ``excess_shift`` above ``from_score``, and the ``top`` largest, at most ``cap``
    (largest first)."""
    scored = sorted((e for e in entries if e.get("excess_shift") is not None), key=lambda e: -e["excess_shift"])
    return [e for i, e in enumerate(scored) if i < top or e["excess_shift"] > from_score][:cap]


def ranked_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of ``scores`` over the labelled entries (the order alone)."""
    known = labels != UNLABELLED
    return auc(labels[known], rankdata(scores[known]) / int(known.sum()))


def validity_rows(models: Path, audits: Path, scenario: str, method: str, from_score: float, top: int, cap: int) -> list[dict]:
    """One row per examined candidate of one model's head-control scan (module docstring)."""
    started = time.monotonic()
    depth_cells = 1 if scenario.endswith("3d") else 3
    audit = json.loads((audit_folder(audits, scenario, method, depth_cells, "head") / "audit.json").read_text())
    model = load_audit_model(None, models / scenario / scenario / method)
    data = load_images(model, model.datalist, audit["data"]["role"], audit["data"]["n"], 0, progress=False)
    seed = model.injection_seed
    control, reason = fit_head_control(model.network, data, model.finishing, seed=seed)
    if control is None:
        raise ValueError(f"{scenario} {method}: no head control ({reason})")

    def read(images: torch.Tensor, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        with capture_head(model.network) as captured:
            odds = forward(model.network, images, model.finishing)[1]
        features = torch.cat(captured).double()
        return odds, control.predict_features(features, index), features

    everything = np.arange(len(data.ids))
    odds, control_odds, features = read(data.images, everything)
    spread = feature_spread(features)
    known = data.labels != UNLABELLED
    separations = (finding_separation(data.labels[known], odds[known]), control.separation)
    library = {c.name: c for c in candidate_library(data.images.shape[2:], None, depth_cells)}
    rows = []
    for entry in examined(audit["candidates"], from_score, top, cap):
        index = subsample(len(data.ids), entry["n"], seed)
        images = add_artifact(data.images[torch.as_tensor(index)], [data.ids[i] for i in index], library[entry["name"]].artifact, seed)
        odds_with, control_with, features_with = read(images, index)
        displacement = feature_displacement(features[torch.as_tensor(index)], features_with, spread)
        effect = excess_effect(odds[index], odds_with, control_odds[index], control_with, separations)
        labels = data.labels[index]
        rows.append({
            "scenario": scenario, "method": method, "seed": training_seed(models, scenario, method),
            "threads": torch.get_num_threads(), "machine": machine(),
            "candidate": entry["name"], "kind": entry["kind"], "is_artifact": matches(entry, TRUTH[scenario]),
            "n": len(index), "excess_shift_scan": entry["excess_shift"], "excess_shift": effect["excess_shift"],
            "shift_in_findings": effect["shift_in_findings"], "control_shift_in_findings": effect["control_shift_in_findings"],
            "control_auc_scan": audit["control"]["auc"],
            "model_auc": ranked_auc(labels, odds[index]), "model_auc_with": ranked_auc(labels, odds_with),
            "control_auc": ranked_auc(labels, control_odds[index]), "control_auc_with": ranked_auc(labels, control_with),
            "feature_displacement": displacement, "excess_per_displacement": per_displacement(effect["excess_shift"], displacement),
            "seconds": round(time.monotonic() - started, 1),
        })  # fmt: skip
    return rows


def markdown(table: pd.DataFrame) -> str:
    """One row per model: its flags (examined candidates with excess beyond the threshold), its top
    candidate with the control's AUC without and with it and how far it moves the features, and the
    flags the control still reads the finding under (AUC drop at most 0.05)."""
    threshold = THRESHOLDS["excess_shift"]
    lines = [
        "| seed | scenario | model | flags | top candidate: excess | control AUC without -> with | feature displacement | excess per displacement | flags, control within 0.05 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (seed, scenario, method), rows in table.groupby(["seed", "scenario", "method"], sort=False):
        top = rows.loc[rows.excess_shift.idxmax()]
        flags = rows[rows.excess_shift > threshold]
        kept = flags[flags.control_auc - flags.control_auc_with <= 0.05]
        lines.append(
            f"| {seed} | {scenario} | {method} | {len(flags)} | `{top.candidate}`{' (the artifact)' if top.is_artifact else ''}: "
            f"{top.excess_shift:.2f} | {top.control_auc:.3f} -> {top.control_auc_with:.3f} | {top.feature_displacement:.2f} | "
            f"{top.excess_per_displacement:.2f} | {len(kept)} |"
        )
    return "\n".join(lines)


def naming_markdown(table: pd.DataFrame) -> str:
    """Does ranking the flags by excess per displacement name the artifact? One row per ERM model:
    its examined flags (excess beyond the threshold), the top flag by excess and the top flag by
    excess per unit of feature displacement (each marked when it is the artifact), and the
    artifact's best examined candidate."""
    threshold = THRESHOLDS["excess_shift"]
    lines = [
        "| seed | scenario | flags examined | top flag by excess | top flag by excess per displacement | the artifact's best examined: excess, per displacement |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    named = lambda r: f"`{r.candidate}`{' (the artifact)' if r.is_artifact else ''}"  # noqa: E731
    for (seed, scenario), rows in table[table.method == "erm"].groupby(["seed", "scenario"], sort=False):
        flags = rows[rows.excess_shift > threshold]
        by_excess = named(flags.loc[flags.excess_shift.idxmax()]) if len(flags) else "none"
        by_ratio = named(flags.loc[flags.excess_per_displacement.idxmax()]) if len(flags) else "none"
        artifact = rows[rows.is_artifact]
        best = artifact.loc[artifact.excess_shift.idxmax()] if len(artifact) else None
        best_text = "not examined" if best is None else (
            f"`{best.candidate}` {best.excess_shift:.2f}, {best.excess_per_displacement:.2f}"
        )  # fmt: skip
        lines.append(f"| {seed} | {scenario} | {len(flags)} | {by_excess} | {by_ratio} | {best_text} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_control_validity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="runs/audit_models", help="output of an audit_models*.yaml runs file")
    parser.add_argument("--audits", default="runs/audit", help="the head-control scans of those models (audit_scenarios scan --control head)")
    parser.add_argument("--scenarios", nargs="+", default=list(TRUTH), choices=list(TRUTH))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--from-score", type=float, default=THRESHOLDS["excess_shift"] / 2,
                        help="examine every candidate whose scan excess is beyond this (default: half the threshold)")
    parser.add_argument("--top", type=int, default=3, help="and the top this many of each scan")
    parser.add_argument("--cap", type=int, default=12, help="at most this many per model")
    parser.add_argument("--table", default="benchmarks/results/audit_control_validity.csv")
    parser.add_argument("--append", action="store_true", help="add the rows to the table's (another seed's models)")
    parser.add_argument("--markdown", action="store_true", help="print the table's markdown and exit")
    parser.add_argument("--naming", nargs="+", metavar="TABLE",
                        help="print, from these committed tables, whether the top flag by excess per displacement names the artifact")
    args = parser.parse_args(argv)
    if args.naming:
        print(naming_markdown(pd.concat([pd.read_csv(t) for t in args.naming], ignore_index=True)))
        return 0
    table = Path(args.table)

    def rows() -> list[dict]:
        kept = pd.read_csv(table).to_dict("records") if args.append and table.is_file() else []
        return kept + [
            row for s in args.scenarios for m in args.methods
            if (audit_folder(Path(args.audits), s, m, 1 if s.endswith("3d") else 3, "head") / "audit.json").is_file()
            for row in validity_rows(Path(args.models), Path(args.audits), s, m, args.from_score, args.top, args.cap)
        ]  # fmt: skip

    return table_command(table, args.markdown, markdown, rows)


if __name__ == "__main__":
    raise SystemExit(main())
