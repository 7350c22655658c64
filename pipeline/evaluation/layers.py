"""Where the shortcut lives: the layer analysis of trained networks, stage by stage.

For each network and its named stages (registry module paths such as ``stage1`` or ``layer3``),
:func:`analyse_layers` reads the pooled stage outputs
(:mod:`pipeline.evaluation.layer_features`) and writes one table of

- ``probe_auc_bias`` / ``probe_auc_label``: linear probes (:mod:`pipeline.evaluation.linear_probes`);
- ``counterfactual_kl``: where the artifact moves the class evidence (:mod:`pipeline.evaluation.counterfactual`);
- ``knn_agreement`` and ``decided_bias{0,1}``: prediction depth (:mod:`pipeline.evaluation.prediction_depth`);

with ``prediction_depth.csv`` and ``layer_curves.png`` (:mod:`pipeline.evaluation.layer_figures`).
The bundles run it as the ``layers`` workflow (``bundles/common/configs/layers.yaml``, which
declares the loaders), writing ``<output_dir>/layers/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.atomic import write_csv
from pipeline.evaluation.counterfactual import counterfactual_stage_kl
from pipeline.evaluation.layer_features import collect_layer_features
from pipeline.evaluation.layer_figures import (
    CURVES_PNG,
    DEPTH_CSV,
    LAYER_COLUMNS,
    LAYERS_CSV,
    plot_layer_curves,
)
from pipeline.evaluation.linear_probes import STAGE_COLUMNS, fit_linear_probe, probe_aucs
from pipeline.evaluation.prediction_depth import features_depth
from pipeline.networks.registry import stages_of

LOADER_KEYS = ("probe_fit", "probe_eval", "cf_with", "cf_without")


def _model_stages(name: str, model: nn.Module, stages: Mapping[str, Sequence[str]] | None) -> list[str]:
    given = (stages or {}).get(name)
    if given is None:
        given = stages_of(model)
    if not given:
        raise ValueError(f"stages[{name!r}] is missing and the model was not built by build_network; name its stages")
    return [given] if isinstance(given, str) else list(given)


def analyse_layers(
    models: Mapping[str, nn.Module],
    stages: Mapping[str, Sequence[str]] | None,
    loaders: Mapping[str, Iterable],
    out_dir: str | Path,
    *,
    k: int = 5,
    targets: Sequence[str] = ("bias", "label"),
    label_key: str = "label",
    bias_key: str = "bias",
    l2: float = 1e-2,
    max_iter: int = 200,
    image_key: str = "image",
    id_key: str = "id",
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Run the layer analyses for several models; write layers.csv, prediction_depth.csv, layer_curves.png.

    Per model and stage the table holds ``probe_auc_<target>`` (probes fitted on
    ``probe_fit``, scored on ``probe_eval``), ``counterfactual_kl`` (label probes from
    ``probe_fit``, over the ``cf_with`` / ``cf_without`` pairs, when given), ``knn_agreement``
    (share of ``probe_eval`` samples whose k-NN prediction agrees with the final one; memory:
    ``probe_fit``) and ``decided_bias{0,1}`` (share of each bias group whose prediction depth is
    at most this stage index). ``prediction_depth.csv`` holds the per-sample depths.

    Args:
        models: name -> trained network.
        stages: name -> stage module paths; a model missing here uses its registry stages.
        loaders: ``probe_fit`` and ``probe_eval`` (required, holding ``label_key``, ``bias_key``
            and ``id_key``; ``probe_fit`` / ``probe_eval`` with the artifact on half of each
            class, so the bias flag is independent of the label), ``cf_with`` and
            ``cf_without`` (optional, both or neither: the ``probe_eval`` items with the artifact
            always / never); ``layers.yaml`` declares them.
        out_dir: output folder (created).
        k: neighbours of the k-NN probes.
        targets: 0/1 batch keys to fit linear probes for.
        label_key, bias_key, image_key, id_key: batch keys.
        l2, max_iter: probe fitting, see :func:`pipeline.evaluation.linear_probes.fit_linear_probe`.
        device: where models run; default: each model's own device.

    Returns:
        The table written to ``layers.csv``: columns model, stage, stage_index, metric, value.

    Raises:
        ValueError: for no models, missing loaders or stages, only one of the counterfactual
            loaders, or as the analyses themselves.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping name -> network, got {models!r}")
    missing = [key for key in LOADER_KEYS[:2] if key not in loaders]
    if missing:
        raise ValueError(f"loaders lack {missing}; required {list(LOADER_KEYS[:2])}, optional {list(LOADER_KEYS[2:])}")
    counterfactual = [key for key in LOADER_KEYS[2:] if key in loaders]
    if len(counterfactual) == 1:
        raise ValueError(f"loaders must hold both 'cf_with' and 'cf_without' or neither, got only {counterfactual}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    wanted = list(dict.fromkeys([*targets, label_key, bias_key]))
    tables, depth_tables = [], []
    for name, model in models.items():
        model_stages = _model_stages(name, model, stages)
        options = dict(image_key=image_key, device=device)
        fit = collect_layer_features(model, model_stages, loaders["probe_fit"], wanted, id_key=None, **options)
        evaluation = collect_layer_features(
            model, model_stages, loaders["probe_eval"], wanted, id_key=id_key, **options
        )
        probe_rows, probes = probe_aucs(fit, evaluation, targets, l2, max_iter)
        parts = [probe_rows]
        if counterfactual:
            label_probes = probes.get(label_key) or {
                s: fit_linear_probe(fit.pooled[s], fit.targets[label_key], l2=l2, max_iter=max_iter)
                for s in model_stages
            }
            cf_loaders = (loaders["cf_with"], loaders["cf_without"])
            parts.append(counterfactual_stage_kl(model, label_probes, *cf_loaders, id_key=id_key, **options))
        depth, agreement = features_depth(fit, evaluation, k, label_key, bias_key)
        depths, bias = depth.per_sample["depth"].to_numpy(), depth.per_sample["bias"].to_numpy()
        rows = []
        for index, stage in enumerate(model_stages):
            rows.append((stage, index, "knn_agreement", float(agreement[:, index].double().mean())))
            for group in (0, 1):
                in_group = depths[bias == group]
                share = float(np.mean(in_group <= index)) if in_group.size else float("nan")
                rows.append((stage, index, f"decided_bias{group}", share))
        parts.append(pd.DataFrame(rows, columns=list(STAGE_COLUMNS)))
        table = pd.concat(parts, ignore_index=True)
        table.insert(0, "model", name)
        tables.append(table)
        depth_table = depth.per_sample.copy()
        depth_table.insert(0, "model", name)
        depth_table["k"] = k
        depth_tables.append(depth_table)
    result = pd.concat(tables, ignore_index=True)[list(LAYER_COLUMNS)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result, out_dir / LAYERS_CSV)
    write_csv(pd.concat(depth_tables, ignore_index=True), out_dir / DEPTH_CSV)
    plot_layer_curves({"layer analysis": result}, out_dir / CURVES_PNG)
    return result

