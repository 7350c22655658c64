"""Audit one suspected artifact: every image with and without it, as the evaluation protocol measures it.

The pair of prediction tables (without: bias 0, with: bias 1) goes through the protocol's own
functions: :func:`pipeline.evaluation.protocol.summarize` (AUC with its CI, TPR, FPR, ...),
:func:`~pipeline.evaluation.protocol.counterfactual_delta_tpr` and
:func:`~pipeline.evaluation.protocol.flip_rate`, so the numbers are the experiment's
``cf_with``/``cf_without`` numbers when the images and the artifact are the same. The per-stage
counterfactual KL is :func:`pipeline.evaluation.counterfactual.counterfactual_stage_kl` with
label probes fitted on the first half of the images (the artifact on every other one) and the
pairs of the second half; saliency (Grad-CAM) shows the images the artifact flipped most.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pipeline.audit.data import UNLABELLED, AuditImages, as_batches
from pipeline.audit.model import AuditModel
from pipeline.audit.scan import add_artifact, pair_effect, predict, prediction_table
from pipeline.evaluation.counterfactual import counterfactual_stage_kl
from pipeline.evaluation.layer_features import collect_layer_features
from pipeline.evaluation.linear_probes import fit_linear_probe
from pipeline.evaluation.metrics import UndefinedMetricWarning
from pipeline.evaluation.protocol import counterfactual_delta_tpr, summarize
from pipeline.evaluation.saliency import draw_saliency_grid, saliency_maps
from pipeline.transforms import build_artifact

logger = logging.getLogger(__name__)
SUMMARY_KEYS = ("auc", "auc_low", "auc_high", "accuracy", "tpr", "fpr")


def parse_artifact(spec, where: str = "--artifact") -> dict:
    """A transform config (``_target_`` and arguments) from a mapping, checked by building it once.

    Raises:
        ValueError: not a mapping with ``_target_``, or the transform refuses its arguments; the
            message names ``where``.
    """
    if isinstance(spec, Mapping) and isinstance(spec.get("artifact"), Mapping):
        spec = spec["artifact"]  # a scenario file: its `artifact` entry
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ValueError(
            f"{where}: expected a transform spec, e.g. {{_target_: PatchArtifact, size: 6, position: top_left}} "
            f"(or a scenario file with an `artifact` entry), got {spec!r:.200}"
        )
    try:
        build_artifact(dict(spec))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: the transform spec does not build: {err}") from err
    return dict(spec)


def stage_kl(
    model: AuditModel, data: AuditImages, with_all: torch.Tensor, batch_size: int = 64
) -> list[dict] | None:
    """Per-stage counterfactual KL rows (stage, stage_index, value); None without stages or labels.

    Args:
        with_all: ``data.images`` with the artifact.
    """
    labelled = np.flatnonzero(data.labels != UNLABELLED)
    if not model.stages or labelled.size < 8 or np.unique(data.labels[labelled]).size < 2:
        return None
    half = labelled.size // 2
    fit, evaluate = labelled[:half], labelled[half:]
    ids = list(data.ids)
    every_other = torch.as_tensor(np.arange(len(ids)) % 2 == 1).reshape(-1, *[1] * (data.images.ndim - 1))
    mixed = torch.where(every_other, with_all, data.images)

    def batches(images: torch.Tensor, index: np.ndarray):
        return as_batches(
            images[torch.as_tensor(index)], [ids[i] for i in index], data.labels[index], batch_size
        )

    features = collect_layer_features(
        model.network, model.stages, batches(mixed, fit), ("label",), id_key=None
    )
    probes = {s: fit_linear_probe(features.pooled[s], features.targets["label"]) for s in model.stages}
    table = counterfactual_stage_kl(
        model.network, probes, batches(with_all, evaluate), batches(data.images, evaluate)
    )
    return [{"stage": r.stage, "stage_index": int(r.stage_index), "counterfactual_kl": float(r.value)}
            for r in table.itertuples()]  # fmt: skip


def audit_artifact(
    model: AuditModel,
    data: AuditImages,
    artifact: Mapping,
    without: np.ndarray | None = None,
    out_dir: str | Path | None = None,
    saliency_count: int = 4,
    batch_size: int = 128,
) -> dict:
    """The protocol's counterfactual numbers of ``artifact`` on every image of ``data``.

    Returns:
        ``artifact``, ``n``, :func:`pipeline.audit.scan.pair_effect`'s numbers with ``delta_tpr``
        / ``delta_fpr`` from the protocol, ``with`` / ``without`` (AUC with CI, accuracy, TPR,
        FPR; labelled images only), ``stage_kl`` (None without stages or labels) and
        ``saliency`` (a PNG under ``out_dir`` of the most-flipped images, or None).
    """
    without = predict(model.network, data.images, model.finishing, batch_size) if without is None else without
    images_with = add_artifact(data.images, data.ids, artifact, model.injection_seed)
    with_artifact = predict(model.network, images_with, model.finishing, batch_size)
    result = {
        "artifact": dict(artifact),
        "n": len(data.ids),
        **pair_effect(data.ids, data.labels, without, with_artifact),
    }
    known = data.labels != UNLABELLED
    if known.any() and np.unique(data.labels[known]).size == 2:
        ids = [i for i, k in zip(data.ids, known) if k]
        tables = {
            "cf_without": prediction_table(ids, data.labels[known], without[known], 0),
            "cf_with": prediction_table(ids, data.labels[known], with_artifact[known], 1),
        }
        with warnings.catch_warnings():  # one artifact group per table: its ΔTPR is NaN by design
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            summaries = {name: summarize(table) for name, table in tables.items()}
        result["delta_tpr"] = counterfactual_delta_tpr(summaries)
        result["delta_fpr"] = summaries["cf_with"]["fpr_bias1"] - summaries["cf_without"]["fpr_bias0"]
        result["with"] = {k: summaries["cf_with"][k] for k in SUMMARY_KEYS}
        result["without"] = {k: summaries["cf_without"][k] for k in SUMMARY_KEYS}
    result["stage_kl"] = stage_kl(model, data, images_with)
    result["saliency"] = None
    if out_dir is not None and saliency_count > 0:
        flipped = np.flatnonzero((with_artifact >= 0.5) != (without >= 0.5))
        order = flipped[np.argsort(-np.abs(with_artifact - without)[flipped])][:saliency_count]
        if order.size:
            pick = torch.as_tensor(order)
            maps = {
                "Grad-CAM without": saliency_maps(model.network, data.images[pick]),
                "Grad-CAM with": saliency_maps(model.network, images_with[pick]),
            }
            path = Path(out_dir) / "figures" / "suspected_saliency.png"
            draw_saliency_grid(images_with[pick], maps, path, model.spatial_dims)
            result["saliency"] = str(path.relative_to(out_dir))
    return result
