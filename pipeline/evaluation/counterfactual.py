"""Counterfactual KL: where the artifact moves a network's class evidence, stage by stage.

For pairs of the same image without and with the artifact (e.g. ``ShortcutInjectiond`` in
modes "never" and "always"), the mean per-sample KL(P_without || P_with) of each stage's class
probe: 0 when the artifact does not change what that stage says about the class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.evaluation.layer_features import LayerFeatures, collect_layer_features
from pipeline.evaluation.linear_probes import STAGE_COLUMNS, LinearProbe
from pipeline.networks.probes import StageProbes


def _paired_order(with_ids: Sequence[str], without_ids: Sequence[str]) -> list[int]:
    """Positions in ``without_ids`` of each id of ``with_ids``."""
    for name, ids in (("loader_with", with_ids), ("loader_without", without_ids)):
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"{name}: sample ids must be unique to pair images, repeated: {repeated}")
    if set(with_ids) != set(without_ids):
        only_with = sorted(set(with_ids) - set(without_ids))[:5]
        only_without = sorted(set(without_ids) - set(with_ids))[:5]
        raise ValueError(
            f"loader_with and loader_without must hold the same sample ids; only with: {only_with}, "
            f"only without: {only_without}"
        )
    position = {sample: i for i, sample in enumerate(without_ids)}
    return [position[sample] for sample in with_ids]


def _kl_per_sample(reference_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(reference_logits.double(), dim=1)
    log_q = F.log_softmax(other_logits.double(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0.0)


def counterfactual_stage_kl(
    model: nn.Module,
    stage_probes: StageProbes | Mapping[str, LinearProbe],
    loader_with: Iterable,
    loader_without: Iterable,
    *,
    image_key: str = "image",
    id_key: str | None = "id",
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Mean per-sample KL(P_without || P_with) of each stage's class probe over counterfactual pairs.

    P_without / P_with are the softmax outputs of a stage's probe on an image without / with the
    artifact (the same sample id in both loaders, e.g. ``ShortcutInjectiond`` in modes "never"
    and "always"). 0 when the artifact does not change the stage's class evidence.

    Args:
        model: the network; eval mode and no gradients while running.
        stage_probes: fitted :class:`LinearProbe` per stage (see :func:`pipeline.evaluation.linear_probes.fit_linear_probe`), or a
            :class:`pipeline.networks.StageProbes` reading the raw stage outputs (e.g. a teacher's).
        loader_with, loader_without: the same samples with and without the artifact.
        image_key, device: see :func:`collect_layer_features`.
        id_key: key pairing the samples; None pairs them by position.

    Returns:
        Columns ``stage``, ``stage_index``, ``metric`` (``counterfactual_kl``), ``value``.

    Raises:
        ValueError: for probes of the wrong type, loaders with different or repeated ids (or
            sizes), or as :func:`collect_layer_features`.
    """
    if isinstance(stage_probes, StageProbes):
        stages, module = list(stage_probes.stage_names), stage_probes
    elif isinstance(stage_probes, Mapping) and stage_probes and all(
        isinstance(p, LinearProbe) for p in stage_probes.values()
    ):
        stages, module = list(stage_probes), None
    else:
        raise ValueError(
            "stage_probes must be a StageProbes module or a non-empty mapping stage -> LinearProbe, "
            f"got {type(stage_probes).__name__}"
        )
    options = dict(targets=(), image_key=image_key, id_key=id_key, stage_probes=module, device=device)
    with_artifact = collect_layer_features(model, stages, loader_with, **options)
    without = collect_layer_features(model, stages, loader_without, **options)
    if len(with_artifact.ids) != len(without.ids):
        raise ValueError(
            f"loader_with has {len(with_artifact.ids)} samples but loader_without has {len(without.ids)}"
        )
    order = torch.as_tensor(_paired_order(with_artifact.ids, without.ids), dtype=torch.long)

    def stage_logits(features: LayerFeatures, stage: str) -> torch.Tensor:
        if module is not None:
            return features.probe_logits[stage]
        return stage_probes[stage].logits(features.pooled[stage])

    rows = []
    for index, stage in enumerate(stages):
        kl = _kl_per_sample(stage_logits(without, stage)[order], stage_logits(with_artifact, stage))
        rows.append({"stage": stage, "stage_index": index, "metric": "counterfactual_kl", "value": float(kl.mean())})
    return pd.DataFrame(rows, columns=list(STAGE_COLUMNS))

