"""The audit's outputs: ``audit.json`` (every number) and ``audit.md`` (the table, the verdict, figures).

Figures (under ``figures/``): ``occlusion.png`` (the mean occlusion map of each class over the
class's mean image), ``top_candidates.png`` (the most moving candidates on example images,
before and after) and, with a suspected artifact, ``suspected_saliency.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pipeline.atomic import write_json, write_text
from pipeline.evaluation.figures import save_figure

AUDIT_JSON, AUDIT_MD, FIGURES = "audit.json", "audit.md", "figures"
TABLE_ROWS = 15
EXCESS = "excess_flip_rate"
EXCESS_SHIFT = "excess_shift"
THRESHOLDS = {"flip_rate": 0.2, EXCESS: 0.2, EXCESS_SHIFT: 1.0}
"""Each verdict score's default threshold (docs/audit.md: how they were chosen)."""
PER_DISPLACEMENT = "excess_per_displacement"
VOLUME_DISPLACEMENT_BOUND = 0.70
"""In volumes, a candidate beyond the ``excess_shift`` threshold is flagged only when its excess per
unit of head-feature displacement is beyond this too (docs/audit.md, "Per unit of feature
displacement": on seeds 0-2 the bias-free 3D models' accusations reach 0.67, the 3D ERM models'
flags 0.74 and more; on three fresh sets it kept every ERM flagged and spared 8 of 9 bias-free models)."""


def _slice(volume: np.ndarray) -> np.ndarray:
    """A 2D view: channel 0, and the middle slice of the last axis of a volume."""
    picture = volume[0] if volume.ndim >= 3 else volume
    return picture[..., picture.shape[-1] // 2] if picture.ndim == 3 else picture


def occlusion_figure(
    maps: Mapping[str, np.ndarray], mean_images: Mapping[str, np.ndarray], path: Path
) -> Path:
    """One panel per class: its mean image with its mean occlusion map over it (red: supports the class)."""
    fig = Figure(figsize=(3.2 * len(maps), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(maps)))
    for axis, (cls, evidence) in zip(axes, maps.items()):
        view = evidence[..., evidence.shape[-1] // 2] if evidence.ndim == 3 else evidence
        limit = float(np.abs(view).max()) or 1.0
        axis.imshow(_slice(mean_images[cls]), cmap="gray")
        axis.imshow(view, cmap="bwr", alpha=0.5, vmin=-limit, vmax=limit)
        axis.set_title(f"class {cls}: occlusion evidence", fontsize=9)
        axis.set_axis_off()
    return save_figure(fig, path)


def candidates_figure(examples: torch.Tensor, after: Mapping[str, torch.Tensor], path: Path) -> Path:
    """One row per candidate (name -> the examples with it): the examples before, then after."""
    n = examples.shape[0]
    fig = Figure(figsize=(2.0 * 2 * n, 2.1 * len(after)), layout="constrained")
    axes = fig.subplots(len(after), 2 * n, squeeze=False)
    for row, (name, images) in enumerate(after.items()):
        for k in range(n):
            for col, (picture, title) in enumerate(((examples[k], "before"), (images[k], "after"))):
                axis = axes[row, 2 * k + col]
                axis.imshow(_slice(picture.numpy()), cmap="gray")
                axis.set_title(f"{name}\n{title}" if col else title, fontsize=7)
                axis.set_axis_off()
    return save_figure(fig, path)


def _number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if isinstance(value, float) and value < 0 else f"{value:.{digits}f}"


def candidate_table(entries: Sequence[Mapping], rows: int = TABLE_ROWS) -> str:
    """The first ``rows`` entries as a markdown table (with the control's columns when it has them:
    the shifts in findings' worth where the labels give them, else the flip rates; and how far each
    candidate moves the head features where the scan measured it)."""
    score = scored_by(entries)
    extra = {
        EXCESS_SHIFT: " control's flip rate | shift (findings) | control's shift | shift beyond the control (95% CI) |",
        EXCESS: " control's flip rate | flips beyond the control (95% CI) |",
    }.get(score, "")
    displaced = score == EXCESS_SHIFT and any(e.get(PER_DISPLACEMENT) is not None for e in entries)
    if displaced:
        extra += " head-feature displacement | beyond the control per displacement |"
    lines = [
        "| # | candidate | kind | region | flip rate (95% CI) | n |" + extra + " ΔTPR | ΔFPR | mean prob. shift | RMS change | excess over the same mark elsewhere |",
        "| --- " * (11 + extra.count("|")) + "|",
    ]
    for rank, e in enumerate(entries[:rows], 1):
        low, high = e["flip_rate_ci"]
        cells = ""
        if score != "flip_rate":
            interval = e[score + "_ci"]
            cells = f" {e['control_flip_rate']:.3f} |"
            if score == EXCESS_SHIFT:
                cells += f" {_number(e['shift_in_findings'])} | {_number(e['control_shift_in_findings'])} |"
            cells += f" {_number(e[score], 3)} ({_number(interval[0])} to {_number(interval[1])}) |"
            if displaced:
                cells += f" {_number(e.get('feature_displacement'))} | {_number(e.get(PER_DISPLACEMENT))} |"
        lines.append(
            f"| {rank} | `{e['name']}` | {e['kind']} | {e['region']} | {e['flip_rate']:.3f} ({low:.2f}-{high:.2f}) "
            f"| {e['n']} |{cells} {_number(e['delta_tpr'])} | {_number(e['delta_fpr'])} | {_number(e['mean_prob_shift'], 3)} "
            f"| {_number(e.get('change_rms'), 3)} | {_number(e.get('region_excess'), 3)} |"
        )
    return "\n".join(lines)


def scored_by(entries: Sequence[Mapping]) -> str:
    """The verdict's score: with a control (:mod:`pipeline.audit.control`), ``excess_shift`` (the
    shift beyond the control's in findings' worth) where the images' labels give it, else
    ``excess_flip_rate``; without one, ``flip_rate``."""
    for score in (EXCESS_SHIFT, EXCESS):
        if entries and entries[0].get(score) is not None:
            return score
    return "flip_rate"


def smallest_sufficient(entries: Sequence[Mapping], score: str = "flip_rate") -> Mapping | None:
    """The suspect: among the candidates that move the model as much as the strongest (the upper
    end of their 95% CI of ``score`` reaches the strongest's), the one that changes the images
    least (``change_rms``). Many strong changes saturate a model alike; the smallest change that
    moves it as much as any is the most specific account of what it reads. None without entries."""
    if not entries:
        return None
    top = max(entries, key=lambda e: e[score])
    tied = [e for e in entries if e[score + "_ci"][1] >= top[score] and e.get("change_rms") is not None]
    return min(tied, key=lambda e: (e["change_rms"], -e[score], e["name"])) if tied else top


SCORE_WORDS = {
    "flip_rate": ("flip rate", "flip more than {t:.2f} of the predictions", "flips {v:.1%} of the predictions"),
    EXCESS: ("flip rate beyond the control's", "flip more than {t:.2f} of the predictions beyond the control's",
             "flips {v:.1%} of the predictions beyond the control's"),
    EXCESS_SHIFT: ("shift beyond the control's", "move the model more than {t:.2f} findings' worth beyond the control",
                   "moves the model {v:.2f} findings' worth beyond the control"),
}  # fmt: skip


def verdict(entries: Sequence[Mapping], threshold: float | None = None, displacement_bound: float | None = None) -> dict:
    """Which candidates move the model beyond ``threshold`` (None: :data:`THRESHOLDS` of the
    score), the suspect (:func:`smallest_sufficient`), and the sentence that says so. The score
    is :func:`scored_by`'s.

    With a ``displacement_bound`` (the audit gives :data:`VOLUME_DISPLACEMENT_BOUND` for volumes)
    and a score of ``excess_shift``, a candidate beyond the threshold is flagged only when its
    ``excess_per_displacement`` is beyond the bound too; the others are listed as ``spared``.
    Without that number (no head control) the threshold alone judges, and ``displacement_bound``
    is None in the result.
    """
    score = scored_by(entries)
    threshold = THRESHOLDS[score] if threshold is None else threshold
    applies = score == EXCESS_SHIFT and any(e.get(PER_DISPLACEMENT) is not None for e in entries)
    bound = displacement_bound if applies else None
    if not entries:
        return {"threshold": threshold, "score": score, "displacement_bound": bound, "flagged": [], "spared": [],
                "suspect": None, "text": "No candidates were scanned."}  # fmt: skip
    name, flagging, moving = SCORE_WORDS[score]
    beyond = [e for e in entries if e[score] > threshold]

    def far_moved(e: Mapping) -> bool:
        return bound is None or e.get(PER_DISPLACEMENT) is None or e[PER_DISPLACEMENT] > bound

    over = [e["name"] for e in beyond if far_moved(e)]
    spared = [e for e in beyond if not far_moved(e)]
    judged = [e for e in entries if e["name"] in over] or entries
    top, suspect = max(judged, key=lambda e: e[score]), smallest_sufficient(judged, score)
    spared_text = (
        f"{len(spared)} {'more ' if over else ''}candidate(s) move it beyond {threshold:g} but by at most {bound:.2f} "
        "per unit of head-feature displacement (in volumes, a change that takes the features that far is not held "
        f"against the model; largest: `{max(spared, key=lambda e: e[score])['name']}`, {max(e[score] for e in spared):.3f})."
        if spared else ""
    )  # fmt: skip
    if over:
        text = (
            f"**Suspected shortcut**: {len(over)} candidate(s) {flagging.format(t=threshold)}"
            + (f" and by more than {bound:.2f} per unit of head-feature displacement" if bound is not None else "")
            + f". The strongest is `{top['name']}` ({top['kind']}, region {top['region']}): it {moving.format(v=top[score])}."
        )
        if suspect is not top:
            text += (
                f" The smallest change that moves it as much (within the 95% CI) is `{suspect['name']}` "
                f"({suspect['kind']}, region {suspect['region']}, {name} {suspect[score]:.3f}, RMS change "
                f"{suspect['change_rms']:.3f} against {top['change_rms']:.3f})."
            )
        text += f" {spared_text}" if spared else ""
    elif spared:
        text = f"**No candidate is held against the model**: {spared_text}"
    else:
        text = (
            f"**No candidate moves the model beyond the threshold**: the largest {name} is "
            f"{top[score]:.3f} (`{top['name']}`), at most {threshold:.2f}."
        )
    return {"threshold": threshold, "score": score, "displacement_bound": bound, "flagged": over,
            "spared": [e["name"] for e in spared], "suspect": suspect["name"], "text": text}  # fmt: skip


def write_report(out_dir: str | Path, audit: Mapping) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``audit.md`` for ``audit`` (see :func:`pipeline.audit.run.run_audit`)."""
    out_dir = Path(out_dir)
    json_path = write_json(dict(audit), out_dir / AUDIT_JSON)
    data = audit["data"]
    lines = [
        "# Shortcut audit",
        "",
        f"Model: {audit['model']['kind']} (weights `{audit['model']['checkpoint']}`). Images: datalist role "
        f"`{data['role']}`, {data['n']} of its {data['n_role']} images"
        + (" (a seeded sub-sample)" if data["n"] < data["n_role"] else "")
        + ".",
        "",
    ]
    if not data["labelled"]:
        lines += ["**The images have no labels**: the audit reports flip rates and probability shifts only "
                  "(no ΔTPR, ΔFPR or AUC).", ""]  # fmt: skip
    elif data["n_labelled"] < data["n"]:
        lines += [f"{data['n'] - data['n_labelled']} images have no label: ΔTPR, ΔFPR and AUC use the "
                  f"{data['n_labelled']} that do.", ""]  # fmt: skip
    if "candidates" in audit:
        scan = audit["scan"]
        lines += [
            "## Scan: which change moves the model?",
            "",
            audit["verdict"]["text"],
            "",
            f"{len(audit['candidates'])} candidates (localized: patches, text tags, lines and local deformations at "
            "each cell of a 3x3 grid; diffuse: noise, contrast, gamma, blur, bias field), none chosen knowing an "
            f"artifact. Each was screened on {scan['screen_images']} images; the {scan['confirm']} that flipped most "
            "were measured again on every image (column n). Flip rate: share of images whose predicted class "
            "changes when the candidate is added; ΔTPR/ΔFPR: with minus without; probability shift: mean change "
            "of P(class 1).",
            "",
        ]
        control = audit.get("control") or {}
        if control.get("auc") is not None:
            how = {
                "head": "a new linear head on the model's own features (the input of its last linear layer), "
                        "a logistic regression fitted on these images' labels",
                "retrain": "the model's architecture trained afresh on these images' labels",
            }[control["kind"]]  # fmt: skip
            lines += [
                f"**The control** ({how}; {control['folds']}-fold cross-fitted, each image scored by a control "
                f"that never saw it; AUC {control['auc']:.3f}) reads only what these labels say: a candidate "
                "that looks like the finding moves it too. A shift is the mean change of the log-odds in "
                "findings' worth (divided by how far the model's, or the control's, log-odds set the labelled "
                "positives from the negatives); the verdict reads the part of the model's shift that the control's does "
                "not share (the control counts only where it moves the same way), and the "
                "table is sorted by it (`audit.json`: by flip rate). A shortcut that these images themselves "
                "carry with their labels is read by the control too, and hidden here. How far a flag goes: on "
                "the project's own models the threshold flagged every model that had learnt a shortcut, and "
                "bias-free 3D models too, under the strongest diffuse changes (docs/audit.md, \"Measured\"); "
                "test a flagged change with `--artifact` on images where it can be judged before acting on it.",
                "",
            ]
            bound = audit["verdict"].get("displacement_bound")
            if bound is not None:
                lines += [
                    f"**In volumes** a candidate is flagged only when its shift beyond the control is also more "
                    f"than {bound:.2f} per unit of head-feature displacement (the mean distance between an image's "
                    "features with and without it, over the spread of the clean images' features): the strongest "
                    "diffuse changes take volumes far from those the control was fitted on, where a bias-free "
                    "model and its control drift apart; a shortcut moves the model far for a small change of its "
                    "features. On the project's fresh 3D models this spared 8 of 9 bias-free models, not all, and "
                    "kept every shortcut model flagged (docs/audit.md, \"Per unit of feature displacement\").",
                    "",
                ]
        elif control.get("reason"):
            lines += [f"{control['reason'].capitalize()}: the verdict reads the raw flip rate.", ""]
        score = audit["verdict"].get("score", "flip_rate")
        ordered = audit["candidates"] if score == "flip_rate" else sorted(
            audit["candidates"], key=lambda e: (-e[score], e["name"])
        )
        lines += [
            candidate_table(ordered),
            "",
            f"All {len(audit['candidates'])} candidates are in `audit.json`.",
            "",
        ]
        if audit.get("figures", {}).get("top_candidates"):
            lines += [f"![the top candidates, before and after]({audit['figures']['top_candidates']})", ""]
    if audit.get("occlusion"):
        lines += ["## Occlusion sensitivity", "",
                  "Mean drop of each class's probability when a box is occluded (red: the region supports the "
                  "class), over up to "
                  f"{audit['occlusion']['per_class']} images per class; share of the positive evidence per region:", "",
                  "| class | " + " | ".join(audit["occlusion"]["regions"]) + " |",
                  "| --- | " + " | ".join("---" for _ in audit["occlusion"]["regions"]) + " |"]  # fmt: skip
        for cls, shares in audit["occlusion"]["shares"].items():
            lines.append(
                f"| {cls} | " + " | ".join(f"{shares[r]:.2f}" for r in audit["occlusion"]["regions"]) + " |"
            )
        lines += ["", f"![occlusion sensitivity per class]({audit['figures']['occlusion']})", ""]
    if audit.get("suspected"):
        s = audit["suspected"]
        lines += ["## The suspected artifact", "", f"`{s['artifact']}` added to every image ({s['n']} pairs):", "",
                  f"- flip rate {s['flip_rate']:.3f} (95% CI {s['flip_rate_ci'][0]:.3f}-{s['flip_rate_ci'][1]:.3f})",
                  f"- ΔTPR {_number(s['delta_tpr'], 3)}, ΔFPR {_number(s['delta_fpr'], 3)}",
                  f"- mean shift of P(class 1): {_number(s['mean_prob_shift'], 3)}; per class: "
                  + ", ".join(f"class {c} {_number(v, 3)}" for c, v in s["prob_shift_by_class"].items())]  # fmt: skip
        if "with" in s:
            lines.append(
                f"- AUC without {s['without']['auc']:.3f} ({s['without']['auc_low']:.3f}-{s['without']['auc_high']:.3f}), "
                f"with {s['with']['auc']:.3f} ({s['with']['auc_low']:.3f}-{s['with']['auc_high']:.3f})"
            )
        if s.get("stage_kl"):
            lines += ["", "Per-stage counterfactual KL (how much the artifact moves each stage's class evidence):", "",
                      "| stage | KL |", "| --- | --- |"] + [f"| {r['stage']} | {r['counterfactual_kl']:.4f} |"
                                                         for r in s["stage_kl"]]  # fmt: skip
        else:
            lines += [
                "",
                "Per-stage KL: not computed (the network's stages are unknown, or the images lack labels).",
            ]
        if s.get("saliency"):
            lines += ["", f"![Grad-CAM of the most-flipped images, without and with]({s['saliency']})"]
        lines.append("")
    md_path = write_text("\n".join(lines), out_dir / AUDIT_MD)
    return json_path, md_path
