"""One audit, end to end: load the model and the images, scan and/or audit a suspected artifact, report."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.audit.candidates import candidate_library
from pipeline.audit.control import CONTROLS, fit_head_control, fit_retrained_control
from pipeline.audit.data import UNLABELLED, AuditImages, load_images
from pipeline.audit.model import AuditModel, load_audit_model
from pipeline.audit.occlusion import class_occlusion_maps, region_shares
from pipeline.audit.report import (
    FIGURES,
    THRESHOLDS,
    VOLUME_DISPLACEMENT_BOUND,
    candidates_figure,
    occlusion_figure,
    verdict,
    write_report,
)
from pipeline.audit.scan import add_artifact, scan
from pipeline.audit.suspected import audit_artifact, parse_artifact

logger = logging.getLogger(__name__)

FLIP_THRESHOLD = THRESHOLDS["flip_rate"]
"""Without a control, a candidate that flips more predictions than this is flagged (docs/audit.md)."""
TOP_FIGURE = 4
EXAMPLES = 2


def audit_model(
    model: AuditModel,
    data: AuditImages,
    out_dir: str | Path,
    artifact: Mapping | None = None,
    do_scan: bool = True,
    threshold: float | None = None,
    displacement_bound: float | None = VOLUME_DISPLACEMENT_BOUND,
    screen_images: int | None = 200,
    confirm: int = 8,
    occlusion_per_class: int = 24,
    families: Sequence[str] | None = None,
    depth_cells: int = 3,
    control: str = "head",
    control_epochs: int = 30,
    control_learning_rate: float | None = None,
    progress: bool = True,
) -> dict:
    """Audit ``model`` on ``data``; writes ``audit.json``, ``audit.md`` and figures into ``out_dir``.

    Args:
        artifact: a suspected artifact (transform config), audited pair by pair; None: none.
        do_scan: rank the candidate library (:mod:`pipeline.audit.candidates`) and compute the
            occlusion maps.
        threshold: the verdict's score above which a candidate is flagged (None: the score's
            default, :data:`pipeline.audit.report.THRESHOLDS`).
        displacement_bound: volumes only, with the head control: a candidate beyond ``threshold``
            is flagged only when its shift beyond the control per unit of head-feature displacement
            is beyond this too (:func:`pipeline.audit.report.verdict`); None or 0: the threshold alone.
        screen_images, confirm: see :func:`pipeline.audit.scan.scan`.
        occlusion_per_class: images per class for the occlusion maps.
        families: candidate families to scan (default all).
        depth_cells: in 3D, 3 (a 3x3x3 grid of localized candidates) or 1 (centred in depth);
            see :func:`pipeline.audit.candidates.candidate_library`.
        control: with a scan, the control each candidate is compared with
            (:mod:`pipeline.audit.control`): ``head`` (a new linear head on the network's features,
            fitted on the audited images' labels, cross-fitted), ``retrain`` (the architecture
            trained afresh on them) or ``none``; without enough labelled images there is none, and
            the report says so.
        control_epochs, control_learning_rate: the ``retrain`` control's training (the learning
            rate: the model config's ``learning_rate``, else 1e-3).

    Returns:
        What ``audit.json`` holds.

    Raises:
        ValueError: neither a scan nor an artifact asked for, a binary classifier is not given, or
            the displacement bound is negative.
    """
    if not do_scan and artifact is None:
        raise ValueError("nothing to audit: ask for --scan, --artifact SPEC, or both")
    if displacement_bound is not None and not displacement_bound >= 0:
        raise ValueError(
            "the displacement bound (--displacement-bound, bundle audit_displacement_bound) must be a number "
            f">= 0 (0 turns it off), got {displacement_bound!r}"
        )
    if model.num_classes != 2:
        raise ValueError(
            f"the audit reads P(class 1) of a binary classifier; this network has {model.num_classes} outputs"
        )
    out_dir = Path(out_dir)
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.monotonic(), time.process_time()
    known = data.labels != UNLABELLED
    audit: dict[str, Any] = {
        "model": model.source,
        "data": {
            "role": data.role,
            "n": len(data.ids),
            "n_role": data.n_role,
            "labelled": data.labelled,
            "n_labelled": int(known.sum()),
            "n_positive": int((data.labels == 1).sum()),
        },  # fmt: skip
        "settings": {
            "threshold": threshold,
            "injection_seed": model.injection_seed,
            "torch_threads": torch.get_num_threads(),
        },
        "figures": {},
    }
    without = None
    if do_scan:
        library = candidate_library(data.images.shape[2:], families, depth_cells)
        if control not in CONTROLS:
            raise ValueError(f"control must be one of {', '.join(CONTROLS)}, got {control!r}")
        fitted = None
        if control == "head":
            fitted, reason = fit_head_control(model.network, data, model.finishing, seed=model.injection_seed)
        elif control == "retrain":
            rate = control_learning_rate or model.config.get("learning_rate")
            rate = float(rate) if isinstance(rate, (int, float)) else 1e-3
            fitted, reason = fit_retrained_control(model.network, data, model.finishing, epochs=control_epochs,
                                                   learning_rate=rate, seed=model.injection_seed, progress=progress)  # fmt: skip
        if control != "none":
            audit["control"] = (
                {"kind": control, "reason": reason} if fitted is None
                else {"kind": control, "auc": round(fitted.auc, 4), "separation": fitted.separation, **fitted.settings}
            )  # fmt: skip
        entries, without = scan(model.network, data, library, model.finishing, model.injection_seed,
                                screen_images, confirm, progress=progress, control=fitted)  # fmt: skip
        audit["scan"] = {
            "screen_images": min(screen_images or len(data.ids), len(data.ids)),
            "confirm": confirm,
            "depth_cells": depth_cells if data.images.ndim == 5 else None,
        }
        volumes = data.images.ndim == 5
        audit["verdict"] = verdict(entries, threshold, (displacement_bound or None) if volumes else None)
        audit["settings"]["threshold"] = audit["verdict"]["threshold"]  # the score's default when None
        audit["settings"]["displacement_bound"] = audit["verdict"]["displacement_bound"]  # None where not applied
        audit["candidates"] = entries
        by_name = {c.name: c for c in library}
        examples = np.arange(min(EXAMPLES, len(data.ids)))
        pick = torch.as_tensor(examples)
        after = {e["name"]: add_artifact(data.images[pick], [data.ids[i] for i in examples],
                                         by_name[e["name"]].artifact, model.injection_seed)
                 for e in entries[:TOP_FIGURE]}  # fmt: skip
        path = candidates_figure(data.images[pick], after, out_dir / FIGURES / "top_candidates.png")
        audit["figures"]["top_candidates"] = str(path.relative_to(out_dir))
        maps = class_occlusion_maps(model.network, data, without, occlusion_per_class, progress)
        classes = np.where(known, data.labels, (without >= 0.5).astype(int))
        means = {c: data.images[torch.as_tensor(classes == int(c))].mean(dim=0).numpy() for c in maps}
        path = occlusion_figure(maps, means, out_dir / FIGURES / "occlusion.png")
        audit["figures"]["occlusion"] = str(path.relative_to(out_dir))
        shares = {c: region_shares(m.sum(axis=2) if m.ndim == 3 else m) for c, m in maps.items()}
        audit["occlusion"] = {
            "per_class": occlusion_per_class, "classes_from": "labels" if known.all() else "labels, else predictions",
            "regions": list(next(iter(shares.values()))), "shares": shares,
            "top_region": {c: max(s, key=s.get) for c, s in shares.items()},
        }  # fmt: skip
    if artifact is not None:
        audit["suspected"] = audit_artifact(model, data, artifact, without, out_dir)
    audit["seconds"] = round(time.monotonic() - started, 1)
    audit["cpu_seconds"] = round(time.process_time() - cpu_started, 1)  # all threads of this process
    write_report(out_dir, audit)
    return audit


MODEL_OPTIONS = ("model_dir", "checkpoint", "configs", "bundle", "scenario", "settings")
"""Keyword arguments of :func:`run_audit` that say where the model is (:func:`load_audit_model`'s)."""


def run_audit(
    datalist: str | Path | None,
    out_dir: str | Path,
    role: str = "test",
    max_images: int | None = 1000,
    seed: int = 0,
    artifact: Mapping | None = None,
    progress: bool = True,
    **options: Any,
) -> dict:
    """:func:`load_audit_model`, :func:`pipeline.audit.data.load_images`, then :func:`audit_model`.

    Args:
        datalist: the images; None: the one the model's config names.
        options: :data:`MODEL_OPTIONS` go to :func:`load_audit_model`, the rest to :func:`audit_model`.
    """
    artifact = None if artifact is None else parse_artifact(artifact)
    where = {key: options.pop(key) for key in MODEL_OPTIONS if key in options}
    model = load_audit_model(datalist, **where)
    model.source["datalist"] = model.datalist
    data = load_images(model, model.datalist, role, max_images, seed, progress)
    return audit_model(model, data, out_dir, artifact=artifact, progress=progress, **options)


def run_workflow(
    network: torch.nn.Module,
    checkpoint: str | Path,
    datalist: str | Path,
    preprocessing: Sequence,
    finishing: Sequence,
    out_dir: str | Path,
    spatial_dims: int,
    image_size: Sequence[int] | None = None,
    in_channels: int = 1,
    num_classes: int = 2,
    injection_seed: int = 0,
    role: str = "test",
    max_images: int | None = 1000,
    artifact: Mapping | None = None,
    do_scan: bool = True,
    stages: Sequence[str] | None = None,
    **options: Any,
) -> dict:
    """The bundle workflow's entry (``bundles/common/configs/audit.yaml``): the config's network,
    weights and preprocessing, then :func:`audit_model`."""
    from pipeline.networks import load_checkpoint
    from pipeline.networks.registry import stages_of

    network = network.cpu()
    load_checkpoint(network, checkpoint, strict=True)
    network.eval()
    model = AuditModel(
        network=network, preprocessing=list(preprocessing), finishing=list(finishing), spatial_dims=int(spatial_dims),
        in_channels=int(in_channels), num_classes=int(num_classes),
        image_size=None if image_size is None else tuple(int(s) for s in image_size), injection_seed=int(injection_seed),
        stages=list(stages or stages_of(network) or []), source={"kind": "bundle workflow", "checkpoint": str(checkpoint), "datalist": str(datalist)},
    )  # fmt: skip
    artifact = None if artifact is None else parse_artifact(artifact, "audit_artifact")
    data = load_images(model, datalist, role, max_images, progress=False)
    return audit_model(model, data, out_dir, artifact=artifact, do_scan=do_scan, progress=False, **options)
