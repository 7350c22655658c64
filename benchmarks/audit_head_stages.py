"""Does a head control read from an earlier stage name the artifact? One row per model and feature.

The audit's ``head`` control reads the input of the network's last linear layer; on localized2d's
ERM it is moved by a bright top-left mark nearly as much as ERM (docs/audit.md, "With the
control"). This probe fits the same cross-fitted logistic regression on each named stage's
globally pooled features instead, scores every 2D candidate of the library on a seeded sub-sample
of the test images (log-odds shifts in findings' worth beyond the control, as the audit does), and
writes, per feature: the control's AUC, the candidates beyond 1.0, the top one and the rank and
score of the best candidate of the scenario's artifact. With ``--fit-role teacher`` the regression is
fitted once on another labelled role of the datalist (the experiment's clean teacher images) instead
of cross-fitted on the test images: a head that never saw the audited images at all.

    python -m benchmarks.audit_head_stages --scenarios localized2d diffuse2d --methods erm reference
    python -m benchmarks.audit_head_stages --markdown
    python -m benchmarks.audit_head_stages --fit-role teacher --table benchmarks/results/audit_head_teacher.csv
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from scipy.stats import rankdata

from benchmarks.audit_scenarios import TRUTH, machine, matches, table_command
from pipeline.audit.candidates import candidate_library, describe
from pipeline.audit.control import HeadControl, assign_folds, capture_head, excess_effect, finding_separation
from pipeline.audit.data import UNLABELLED, load_images, subsample
from pipeline.audit.model import load_audit_model
from pipeline.audit.report import THRESHOLDS
from pipeline.audit.scan import add_artifact
from pipeline.evaluation.linear_probes import fit_linear_probe
from pipeline.evaluation.metrics import auc

HEAD = "head"
"""The audit's own feature: the input of the last linear layer."""


def features_and_log_odds(
    network, images: torch.Tensor, stages: Sequence[str], finishing: Sequence = (), batch_size: int = 100
):
    """(log-odds of class 1, {stage: (N, C) globally pooled features, ``head``: the last layer's input})
    of preprocessed ``images`` (``finishing``, the transforms after the injection point, applied first)."""
    finish = Compose(list(finishing)) if finishing else None
    modules = dict(network.named_modules())
    pooled: dict[str, list] = {s: [] for s in stages}
    hooks = [
        modules[s].register_forward_hook(lambda _m, _i, out, s=s: pooled[s].append(out.detach().float().flatten(2).mean(2)))
        for s in stages
    ]  # fmt: skip
    odds = []
    try:
        with capture_head(network) as head, torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                if finish is not None:
                    batch = torch.stack([torch.as_tensor(finish({"image": x})["image"]) for x in batch])
                logits = network(batch.as_subclass(torch.Tensor).float()).double()
                odds.append(logits[:, 1] - logits[:, 0])
    finally:
        for hook in hooks:
            hook.remove()
    features = {s: torch.cat(v).double() for s, v in pooled.items()}
    features[HEAD] = torch.cat(head).double()
    return torch.cat(odds).numpy(), features


def probe_rows(
    models: Path, scenario: str, method: str, screen: int, seed: int = 0, fit_role: str | None = None
) -> list[dict]:
    """One row per feature of one model; ``fit_role``: fit each feature's probe on that role's
    images instead of cross-fitting on the test images (module docstring)."""
    started = time.monotonic()
    model = load_audit_model(None, models / scenario / scenario / method)
    data = load_images(model, model.datalist, "test", 1000, seed, progress=False)
    labels = data.labels
    odds, features = features_and_log_odds(model.network, data.images, model.stages, model.finishing)
    if fit_role is None:
        folds = assign_folds(labels, 2, seed)
        fits = [(features, labels, folds != k) for k in (0, 1)]
    else:  # one probe, fitted on other images, reads every test image
        folds = np.zeros(len(labels), dtype=np.int64)
        other = load_images(model, model.datalist, fit_role, None, seed, progress=False)
        other_features = features_and_log_odds(model.network, other.images, model.stages, model.finishing)[1]
        fits = [(other_features, other.labels, other.labels != UNLABELLED)]  # its labelled images
    screened = subsample(len(labels), screen, seed)
    images, ids = data.images[torch.as_tensor(screened)], [data.ids[i] for i in screened]
    candidates = candidate_library(data.images.shape[2:], None, 1)
    changed = [features_and_log_odds(model.network, add_artifact(images, ids, c.artifact, seed), model.stages, model.finishing) for c in candidates]
    model_gap = finding_separation(labels, odds)
    rows = []
    for name in [*model.stages, HEAD]:
        # the audit's head control (cross-fitted probes, each image read by the probe of its fold), on these features
        probes = [fit_linear_probe(f[name][torch.as_tensor(np.flatnonzero(rows))], y[rows]) for f, y, rows in fits]
        control = HeadControl(folds, "head", probes=probes)
        control_odds = control.predict_features(features[name], np.arange(len(labels)))
        gaps = (model_gap, finding_separation(labels, control_odds))
        scored = []
        for candidate, (odds_with, feats_with) in zip(candidates, changed):
            effect = excess_effect(odds[screened], odds_with, control_odds[screened], control.predict_features(feats_with[name], screened), gaps)
            scored.append({**describe(candidate), "score": effect.get("excess_shift", float("nan"))})
        scored.sort(key=lambda e: -e["score"])
        rank, best = next(((i, e) for i, e in enumerate(scored, 1) if matches(e, TRUTH[scenario])), (None, None))
        rows.append({
            "scenario": scenario, "method": method, "features": name, "fitted_on": fit_role or "test, cross-fitted",
            "threads": torch.get_num_threads(),
            "machine": machine(), "seed": seed, "n_images": len(labels), "n_screened": len(screened),
            "n_candidates": len(candidates),
            "control_auc": auc(labels, rankdata(control_odds) / len(labels)),
            "n_flagged": sum(e["score"] > THRESHOLDS["excess_shift"] for e in scored),
            "top_name": scored[0]["name"], "top_score": scored[0]["score"],
            "best_true_name": best and best["name"], "best_true_rank": rank, "best_true_score": best and best["score"],
            "seconds": time.monotonic() - started,
        })  # fmt: skip
    return rows


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| scenario | model | control's features | control AUC | candidates beyond 1.0 | top | best candidate of the artifact: rank, score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.scenario} | {r.method} | {r.features} | {r.control_auc:.3f} | {r.n_flagged} of {r.n_candidates} | "
            f"`{r.top_name}` {r.top_score:.2f} | `{r.best_true_name}` {r.best_true_rank}, {r.best_true_score:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_head_stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="runs/audit_models", help="output of benchmarks/configs/audit_models.yaml")
    parser.add_argument("--scenarios", nargs="+", default=["localized2d", "diffuse2d"], choices=["localized2d", "diffuse2d"])
    parser.add_argument("--methods", nargs="+", default=["erm", "reference"])
    parser.add_argument("--screen-images", type=int, default=300, help="test images each candidate is added to")
    parser.add_argument("--fit-role", help="fit the probes on this datalist role (e.g. teacher), not cross-fitted on test")
    parser.add_argument("--table", default="benchmarks/results/audit_head_stages.csv")
    parser.add_argument("--markdown", action="store_true", help="print the table's markdown and exit")
    args = parser.parse_args(argv)
    return table_command(
        Path(args.table), args.markdown, markdown,
        lambda: [row for s in args.scenarios for m in args.methods
                 for row in probe_rows(Path(args.models), s, m, args.screen_images, fit_role=args.fit_role)],
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
