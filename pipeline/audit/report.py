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
    lines = [
        "| # | candidate | kind | region | flip rate (95% CI) | n | ΔTPR | ΔFPR | mean prob. shift | RMS change | excess over the same mark elsewhere |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rank, e in enumerate(entries[:rows], 1):
        low, high = e["flip_rate_ci"]
        lines.append(
            f"| {rank} | `{e['name']}` | {e['kind']} | {e['region']} | {e['flip_rate']:.3f} ({low:.2f}-{high:.2f}) "
            f"| {e['n']} | {_number(e['delta_tpr'])} | {_number(e['delta_fpr'])} | {_number(e['mean_prob_shift'], 3)} "
            f"| {_number(e.get('change_rms'), 3)} | {_number(e.get('region_excess'), 3)} |"
        )
    return "\n".join(lines)


def smallest_sufficient(entries: Sequence[Mapping]) -> Mapping | None:
    """The suspect: among the candidates that flip as many predictions as the strongest (the upper
    end of their 95% CI reaches its flip rate), the one that changes the images least
    (``change_rms``). Many strong changes saturate a model alike; the smallest change that moves it
    as much as any is the most specific account of what it reads. None without entries."""
    if not entries:
        return None
    top = entries[0]
    tied = [e for e in entries if e["flip_rate_ci"][1] >= top["flip_rate"] and e.get("change_rms") is not None]
    return min(tied, key=lambda e: (e["change_rms"], -e["flip_rate"], e["name"])) if tied else top


def verdict(entries: Sequence[Mapping], threshold: float) -> dict:
    """Which candidates move the model beyond ``threshold`` (flip rate), the suspect
    (:func:`smallest_sufficient`), and the sentence that says so."""
    over = [e["name"] for e in entries if e["flip_rate"] > threshold]
    if not entries:
        return {"threshold": threshold, "flagged": [], "suspect": None, "text": "No candidates were scanned."}
    top, suspect = entries[0], smallest_sufficient(entries)
    if over:
        text = (
            f"**Suspected shortcut**: {len(over)} candidate(s) flip more than {threshold:.2f} of the predictions. "
            f"The strongest is `{top['name']}` ({top['kind']}, region {top['region']}): it flips "
            f"{top['flip_rate']:.1%} of the predictions."
        )
        if suspect is not top:
            text += (
                f" The smallest change that flips as many (within the 95% CI) is `{suspect['name']}` "
                f"({suspect['kind']}, region {suspect['region']}, {suspect['flip_rate']:.1%}, RMS change "
                f"{suspect['change_rms']:.3f} against {top['change_rms']:.3f})."
            )
    else:
        text = (
            f"**No candidate moves the model beyond the threshold**: the largest flip rate is {top['flip_rate']:.1%} "
            f"(`{top['name']}`), at most {threshold:.2f}."
        )
    return {"threshold": threshold, "flagged": over, "suspect": suspect["name"], "text": text}


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
            candidate_table(audit["candidates"]),
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
