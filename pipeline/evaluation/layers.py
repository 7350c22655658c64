"""Where the shortcut lives: stage-wise linear probes, counterfactual KL and prediction depth.

For a trained network and its named stages (registry module paths such as ``stage1`` or
``layer3``), every analysis reads the globally average-pooled output of each stage (all spatial
axes, so 2D and 3D alike), captured with :class:`pipeline.networks.hooks.FeatureHooks`:

- :func:`linear_probe_scores`: a logistic-regression probe per stage and target (the bias flag,
  the class label) fitted on one set and scored by AUC on another: how well each stage encodes
  the artifact and the class.
- :func:`counterfactual_stage_kl`: mean per-sample KL divergence between a stage's class-probe
  outputs on the same image without and with the artifact: where the artifact moves the
  class evidence.
- :func:`prediction_depth`: k-NN probes per stage (Baldock et al. 2021; Boland et al. 2024),
  see :mod:`pipeline.evaluation.prediction_depth`.

:func:`analyse_layers` runs all three for several models and writes ``layers.csv``,
``prediction_depth.csv`` and ``layer_curves.png``; :func:`plot_layer_curves` draws scenarios
(e.g. a localized and a diffuse shortcut) side by side. Loaders yield MONAI-style dict batches.
Models (and given probes) are put in eval mode and restored afterwards, and run without
gradients. Probes are fitted by full-batch L-BFGS from zero weights on standardised features in
float64, so the same inputs give the same numbers.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from monai.utils import convert_to_tensor
from torch import nn

from pipeline.atomic import write_csv
from pipeline.networks.hooks import FeatureHooks
from pipeline.evaluation.metrics import auc
from pipeline.evaluation.prediction_depth import PredictionDepth, depth_from_agreement, knn_stage_predictions
from pipeline.evaluation.report import save_figure
from pipeline.networks.probes import StageProbes
from pipeline.networks.registry import stages_of
from pipeline.transforms import ShortcutInjectiond

LAYER_COLUMNS = ("model", "stage", "stage_index", "metric", "value")
SHORTCUT_METRICS = ("probe_auc_bias", "counterfactual_kl")
LOADER_KEYS = ("probe_fit", "probe_eval", "cf_with", "cf_without")
LAYERS_CSV, DEPTH_CSV, CURVES_PNG = "layers.csv", "prediction_depth.csv", "layer_curves.png"

_METRIC_TITLES = {
    "probe_auc_bias": "bias-probe AUC",
    "probe_auc_label": "label-probe AUC",
    "counterfactual_kl": "counterfactual KL (without || with)",
    "knn_agreement": "k-NN agrees with final prediction",
    "decided_bias0": "share decided, bias=0",
    "decided_bias1": "share decided, bias=1",
}


# ----------------------------------------------------------------------------- feature collection


@dataclass(frozen=True)
class LayerFeatures:
    """What one pass of a model over a loader leaves for the analyses (all on the CPU).

    Attributes:
        stages: the hooked stages, in order.
        pooled: stage -> (N, channels) float32 globally average-pooled stage outputs.
        logits: (N, classes) model outputs.
        targets: batch key -> (N,) int64 values (e.g. ``label``, ``bias``).
        ids: sample ids as text (running positions when no id key is used).
        probe_logits: stage -> (N, classes) outputs of the given ``StageProbes`` (else empty).
    """

    stages: tuple[str, ...]
    pooled: dict[str, torch.Tensor]
    logits: torch.Tensor
    targets: dict[str, torch.Tensor]
    ids: tuple[str, ...]
    probe_logits: dict[str, torch.Tensor]

    @property
    def predictions(self) -> torch.Tensor:
        """(N,) final predicted classes: argmax of the logits (logit > 0 for a single output)."""
        if self.logits.shape[1] == 1:
            return (self.logits[:, 0] > 0).long()
        return self.logits.argmax(dim=1)


@contextlib.contextmanager
def _inference(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode and no gradients inside; every submodule's own training flag restored on exit."""
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    for module in modules:
        if module is not None:
            module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def _batch_value(batch, key: str, where: str):
    if not isinstance(batch, Mapping):
        raise ValueError(f"{where}: batches must be dicts (MONAI dictionary data), got {type(batch).__name__}")
    if key not in batch:
        raise ValueError(f"{where}: key {key!r} is not in the batch; available keys: {sorted(map(str, batch))}")
    return batch[key]


def _batch_vector(value, key: str, size: int, where: str) -> torch.Tensor:
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).reshape(-1)
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.size != size or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{where}: {key!r} must hold one number per image ({size}), got {array.size} of {array.dtype}")
    if not np.array_equal(array, np.round(array)):
        raise ValueError(f"{where}: {key!r} must hold integer values, got {array[:5].tolist()}")
    return torch.from_numpy(array.astype(np.int64))


def _pool(feature, stage: str) -> torch.Tensor:
    if not isinstance(feature, torch.Tensor) or feature.ndim < 2:
        shape = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
        raise ValueError(f"stage {stage!r}: output must be a (batch, channels, *spatial) tensor, got {shape}")
    pooled = feature.flatten(2).mean(dim=2) if feature.ndim > 2 else feature
    return convert_to_tensor(pooled, track_meta=False).float().cpu()


def collect_layer_features(
    model: nn.Module,
    stages: Sequence[str],
    loader: Iterable,
    targets: Sequence[str] = ("label", "bias"),
    *,
    image_key: str = "image",
    id_key: str | None = "id",
    stage_probes: StageProbes | None = None,
    device: str | torch.device | None = None,
) -> LayerFeatures:
    """Run ``model`` over ``loader`` and keep the pooled stage outputs, logits, targets and ids.

    Args:
        model: classifier returning (batch, classes) logits; eval mode and no gradients while
            running, its modes restored afterwards.
        stages: module paths of the stages (e.g. ``network_stages(name)``).
        loader: iterable of dict batches holding ``image_key``, the ``targets`` keys and ``id_key``.
        targets: batch keys of integer per-sample values to keep (label, bias flag...).
        image_key: batch key of the images (B, C, *spatial).
        id_key: batch key of sample ids; None numbers the samples in loader order.
        stage_probes: optional probes applied to the raw stage outputs (``probe_logits``).
        device: where the model runs; default: the device of its parameters.

    Raises:
        ValueError: for an unknown stage (from ``FeatureHooks``), a batch that is not a dict or
            lacks a key, non-integer targets, a stage that did not run, an empty loader or a
            model output that is not (batch, classes).
    """
    stages = [stages] if isinstance(stages, str) else list(stages)
    device = _model_device(model, device)
    probed = list(stage_probes.stage_names) if stage_probes is not None else []
    hooked = stages + [s for s in probed if s not in stages]
    pooled: dict[str, list] = {s: [] for s in stages}
    probe_out: dict[str, list] = {s: [] for s in probed}
    logits, ids, values = [], [], {key: [] for key in targets}
    with FeatureHooks(model, hooked, detach=True) as hooks, _inference(model, stage_probes):
        for number, batch in enumerate(loader):
            where = f"batch {number}"
            images = convert_to_tensor(_batch_value(batch, image_key, where), track_meta=False).to(device)
            output = model(images)
            if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != images.shape[0]:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"{where}: model must return (batch, classes) logits, got {shape}")
            features = hooks.features
            not_run = [s for s in hooked if s not in features]
            if not_run:
                raise ValueError(f"{where}: stage(s) {not_run} did not run in the model's forward pass")
            for stage in stages:
                pooled[stage].append(_pool(features[stage], stage))
            if stage_probes is not None:
                for stage, out in stage_probes(features).items():
                    probe_out[stage].append(convert_to_tensor(out, track_meta=False).float().cpu())
            logits.append(convert_to_tensor(output, track_meta=False).float().cpu())
            size = images.shape[0]
            for key in targets:
                values[key].append(_batch_vector(_batch_value(batch, key, where), key, size, where))
            if id_key is None:
                ids.extend(str(len(ids) + i) for i in range(size))
            else:
                raw = _batch_value(batch, id_key, where)
                raw = raw.detach().cpu().reshape(-1).tolist() if isinstance(raw, torch.Tensor) else list(raw)
                if len(raw) != size:
                    raise ValueError(f"{where}: {id_key!r} must hold one id per image ({size}), got {len(raw)}")
                ids.extend(str(i) for i in raw)
    if not logits:
        raise ValueError("loader yielded no batches")
    return LayerFeatures(
        stages=tuple(stages),
        pooled={s: torch.cat(v) for s, v in pooled.items()},
        logits=torch.cat(logits),
        targets={k: torch.cat(v) for k, v in values.items()},
        ids=tuple(ids),
        probe_logits={s: torch.cat(v) for s, v in probe_out.items()},
    )


# ----------------------------------------------------------------------------- linear probes


@dataclass(frozen=True)
class LinearProbe:
    """Multinomial logistic regression on standardised pooled features (float64, CPU).

    Attributes:
        mean, scale: per-feature standardisation learnt on the fitting set.
        weight: (classes, features); bias: (classes,).
    """

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits of (N, features) pooled features.

        Raises:
            ValueError: for a feature count other than the fitted one.
        """
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.numel():
            raise ValueError(f"probe expects (N, {self.mean.numel()}) features, got {tuple(x.shape)}")
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) class probabilities (softmax of :meth:`logits`)."""
        return self.logits(features).softmax(dim=1)


def fit_linear_probe(
    features: torch.Tensor, target, num_classes: int | None = None, l2: float = 1e-2, max_iter: int = 200
) -> LinearProbe:
    """Fit a logistic-regression probe: mean cross-entropy + ``l2 / 2 * ||weight||^2`` by L-BFGS.

    Starts from zero weights, so the fit is deterministic (the objective is convex).

    Args:
        features: (N, C) pooled features.
        target: N class indices; at least two classes must be present.
        num_classes: output classes (default: largest target + 1).
        l2: ridge penalty on the weights (>= 0; > 0 keeps separable data finite).
        max_iter: L-BFGS iterations.

    Raises:
        ValueError: for bad shapes, a single class, a negative ``l2`` or a non-positive ``max_iter``.
    """
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, C) tensor, got shape {tuple(x.shape)}")
    y = torch.as_tensor(target).detach().to("cpu").reshape(-1).long()
    if y.numel() != x.shape[0] or int(y.min()) < 0:
        raise ValueError(f"target must hold {x.shape[0]} non-negative class indices, got {y.numel()} values")
    present = torch.unique(y).tolist()
    if len(present) < 2:
        raise ValueError(f"target has the single class {present}; a probe needs at least two classes")
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= int(y.max()):
        raise ValueError(f"num_classes must be an integer > {int(y.max())} (the largest target), got {num_classes!r}")
    if not (isinstance(l2, (int, float)) and l2 >= 0):
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    scale = torch.where(std > 0, std, torch.ones_like(std))
    z = (x - mean) / scale
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearProbe(mean, scale, weight.detach().clone(), bias.detach().clone())


def _check_binary(features: LayerFeatures, key: str, where: str) -> None:
    values = torch.unique(features.targets[key]).tolist()
    if not set(values) <= {0, 1}:
        raise ValueError(f"{where}: probe target {key!r} must be 0/1 to be scored by AUC, found values {values[:5]}")


def _probe_table(
    fit: LayerFeatures, evaluation: LayerFeatures, targets: Sequence[str], l2: float, max_iter: int
) -> tuple[pd.DataFrame, dict[str, dict[str, LinearProbe]]]:
    rows, probes = [], {}
    for key in targets:
        _check_binary(fit, key, "loader_fit")
        _check_binary(evaluation, key, "loader_eval")
        probes[key] = {}
        for index, stage in enumerate(fit.stages):
            try:
                probe = fit_linear_probe(fit.pooled[stage], fit.targets[key], num_classes=2, l2=l2, max_iter=max_iter)
            except ValueError as err:
                raise ValueError(f"loader_fit: cannot fit the {key!r} probe of stage {stage!r}: {err}") from err
            probes[key][stage] = probe
            score = auc(evaluation.targets[key].numpy(), probe.probabilities(evaluation.pooled[stage])[:, 1].numpy())
            rows.append({"stage": stage, "stage_index": index, "metric": f"probe_auc_{key}", "value": score})
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS[1:])), probes


def linear_probe_scores(
    model: nn.Module,
    stages: Sequence[str],
    loader_fit: Iterable,
    loader_eval: Iterable,
    targets: Sequence[str] = ("bias", "label"),
    *,
    l2: float = 1e-2,
    max_iter: int = 200,
    image_key: str = "image",
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """AUC of a linear probe per stage and target, fitted on ``loader_fit``, scored on ``loader_eval``.

    Args:
        model, stages, image_key, device: see :func:`collect_layer_features`.
        loader_fit: batches the probes are fitted on (both classes of every target present).
        loader_eval: batches the probes are scored on.
        targets: 0/1 batch keys to probe for; the metric is named ``probe_auc_<key>``.
        l2, max_iter: see :func:`fit_linear_probe`.

    Returns:
        Columns ``stage``, ``stage_index`` (0-based), ``metric``, ``value``; NaN (with a warning)
        where ``loader_eval`` holds a single class.

    Raises:
        ValueError: for a non-binary target, a target with one class in ``loader_fit``, or as
            :func:`collect_layer_features`.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    fit = collect_layer_features(model, stages, loader_fit, targets, image_key=image_key, id_key=None, device=device)
    evaluation = collect_layer_features(
        model, stages, loader_eval, targets, image_key=image_key, id_key=None, device=device
    )
    return _probe_table(fit, evaluation, targets, l2, max_iter)[0]


def fit_stage_probes(
    model: nn.Module,
    stages: Sequence[str],
    loader: Iterable,
    target: str = "label",
    *,
    l2: float = 1e-2,
    max_iter: int = 200,
    image_key: str = "image",
    device: str | torch.device | None = None,
) -> dict[str, LinearProbe]:
    """A :class:`LinearProbe` per stage on the pooled features, predicting the batch key ``target``.

    Raises:
        ValueError: for a target with a single class, or as :func:`collect_layer_features`.
    """
    features = collect_layer_features(model, stages, loader, [target], image_key=image_key, id_key=None, device=device)
    return {
        stage: fit_linear_probe(features.pooled[stage], features.targets[target], l2=l2, max_iter=max_iter)
        for stage in features.stages
    }


# ----------------------------------------------------------------------------- counterfactual KL


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
        stage_probes: fitted :class:`LinearProbe` per stage (see :func:`fit_stage_probes`), or a
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
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS[1:]))


# ----------------------------------------------------------------------------- prediction depth


def _depth_result(
    memory: LayerFeatures, queries: LayerFeatures, k: int, label_key: str, bias_key: str
) -> tuple[PredictionDepth, torch.Tensor]:
    """Depths of ``queries`` against the k-NN memory, and the (N, stages) agreement table."""
    final = queries.predictions
    agreement = knn_stage_predictions(memory.pooled, memory.targets[label_key], queries.pooled, k) == final[:, None]
    per_sample = pd.DataFrame(
        {
            "id": list(queries.ids),
            "label": queries.targets[label_key].numpy(),
            "bias": queries.targets[bias_key].numpy(),
            "prediction": final.numpy(),
            "depth": depth_from_agreement(agreement).numpy(),
        }
    )
    return PredictionDepth(per_sample, memory.stages, k), agreement


def prediction_depth(
    model: nn.Module,
    stages: Sequence[str],
    loader_train: Iterable,
    loader_eval: Iterable,
    k: int = 5,
    *,
    label_key: str = "label",
    bias_key: str = "bias",
    image_key: str = "image",
    id_key: str | None = "id",
    device: str | torch.device | None = None,
) -> PredictionDepth:
    """Prediction depth of every sample of ``loader_eval`` (Baldock et al. 2021).

    k-NN probes on each stage's pooled features use ``loader_train`` (with its ``label_key``
    labels) as memory; a sample's depth is the first stage index from which every deeper probe
    agrees with the model's final prediction (``len(stages)`` when even the last one disagrees).

    Returns:
        A :class:`PredictionDepth`: ``per_sample`` (id, label, bias, prediction, depth), ``mean``
        and ``mean_by_bias()``.

    Raises:
        ValueError: for ``k`` outside [1, training set size], or as :func:`collect_layer_features`.
    """
    memory = collect_layer_features(
        model, stages, loader_train, [label_key], image_key=image_key, id_key=None, device=device
    )
    queries = collect_layer_features(
        model, stages, loader_eval, [label_key, bias_key], image_key=image_key, id_key=id_key, device=device
    )
    return _depth_result(memory, queries, k, label_key, bias_key)[0]


# ----------------------------------------------------------------------------- loaders and driver


def layer_loaders(
    items_fit: Sequence[Mapping],
    items_eval: Sequence[Mapping],
    preprocessing: Sequence,
    injection: Mapping,
    postprocessing: Sequence = (),
    batch_size: int = 32,
) -> dict[str, DataLoader]:
    """The loaders :func:`analyse_layers` needs, from datalist items and the bundle's injection.

    ``probe_fit`` / ``probe_eval``: the items with the artifact on half of each class (rate 0.5
    for every class), so the bias flag is independent of the label and a bias probe cannot
    score by reading the class. ``cf_with`` / ``cf_without``: ``items_eval`` with the artifact
    always / never (counterfactual pairs). Loaders keep the item order (no shuffling).

    Args:
        items_fit, items_eval: datalist items (image, label, id...).
        preprocessing: dictionary transforms before the injection (loading, scaling).
        injection: keyword arguments of :class:`pipeline.transforms.ShortcutInjectiond` except
            ``mode`` (keys, artifact, rates, seed...).
        postprocessing: dictionary transforms after the injection.
        batch_size: batch size of every loader.

    Raises:
        ValueError: for an ``injection`` that sets ``mode``, empty items, or as ``ShortcutInjectiond``.
    """
    injection = dict(injection)
    if "mode" in injection:
        raise ValueError(f"injection must not set 'mode' (got {injection['mode']!r}); layer_loaders sets it per loader")
    for name, items in (("items_fit", items_fit), ("items_eval", items_eval)):
        if not items:
            raise ValueError(f"{name} must hold at least one datalist item")
    n_classes = len(ShortcutInjectiond(**injection).injection.rates)
    balanced = {**injection, "rates": [0.5] * n_classes}

    def loader(items: Sequence[Mapping], mode: str, options: Mapping) -> DataLoader:
        transform = Compose([*preprocessing, ShortcutInjectiond(**options, mode=mode), *postprocessing])
        return DataLoader(Dataset(list(items), transform), batch_size=batch_size, shuffle=False)

    return {
        "probe_fit": loader(items_fit, "as_trained", balanced),
        "probe_eval": loader(items_eval, "as_trained", balanced),
        "cf_with": loader(items_eval, "always", injection),
        "cf_without": loader(items_eval, "never", injection),
    }


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
            and ``id_key``), ``cf_with`` and ``cf_without`` (optional, both or neither); see
            :func:`layer_loaders`.
        out_dir: output folder (created).
        k: neighbours of the k-NN probes.
        targets: 0/1 batch keys to fit linear probes for.
        label_key, bias_key, image_key, id_key: batch keys.
        l2, max_iter: probe fitting, see :func:`fit_linear_probe`.
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
        probe_rows, probes = _probe_table(fit, evaluation, targets, l2, max_iter)
        parts = [probe_rows]
        if counterfactual:
            label_probes = probes.get(label_key) or {
                s: fit_linear_probe(fit.pooled[s], fit.targets[label_key], l2=l2, max_iter=max_iter)
                for s in model_stages
            }
            cf_loaders = (loaders["cf_with"], loaders["cf_without"])
            parts.append(counterfactual_stage_kl(model, label_probes, *cf_loaders, id_key=id_key, **options))
        depth, agreement = _depth_result(fit, evaluation, k, label_key, bias_key)
        depths, bias = depth.per_sample["depth"].to_numpy(), depth.per_sample["bias"].to_numpy()
        rows = []
        for index, stage in enumerate(model_stages):
            rows.append((stage, index, "knn_agreement", float(agreement[:, index].double().mean())))
            for group in (0, 1):
                in_group = depths[bias == group]
                share = float(np.mean(in_group <= index)) if in_group.size else float("nan")
                rows.append((stage, index, f"decided_bias{group}", share))
        parts.append(pd.DataFrame(rows, columns=list(LAYER_COLUMNS[1:])))
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


# ----------------------------------------------------------------------------- figures


def _check_table(scenario: str, table) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"tables[{scenario!r}] must be a DataFrame, got {type(table).__name__}")
    missing = [c for c in LAYER_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"tables[{scenario!r}] lacks column(s) {missing}; required {list(LAYER_COLUMNS)}")
    return table


def plot_layer_curves(
    tables: Mapping[str, pd.DataFrame], out_png: str | Path, metrics: Sequence[str] = SHORTCUT_METRICS
) -> Path:
    """Shortcut sensitivity per stage: one column per scenario, one row per metric, one line per model.

    Use it to put a localized and a diffuse scenario side by side, e.g.
    ``plot_layer_curves({"patch": patch_table, "noise": noise_table}, "layers.png")``.

    Args:
        tables: scenario -> table of :func:`analyse_layers` (read from ``layers.csv`` or returned).
        out_png: PNG path (written atomically).
        metrics: metrics drawn, one row each; a metric missing from a table leaves a note.

    Returns:
        ``out_png`` as a Path.

    Raises:
        ValueError: for no tables or metrics, or a table without the layer columns.
    """
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError(f"tables must be a non-empty mapping scenario -> layer table, got {tables!r}")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric, e.g. ['probe_auc_bias', 'counterfactual_kl']")
    checked = {str(s): _check_table(str(s), t) for s, t in tables.items()}
    fig = Figure(figsize=(4.2 * len(checked), 3.0 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(checked), squeeze=False)
    for column, (scenario, table) in enumerate(checked.items()):
        for row, metric in enumerate(metrics):
            axis = axes[row][column]
            part = table[table["metric"] == metric]
            axis.set(ylabel=_METRIC_TITLES.get(metric, metric), title=scenario if row == 0 else "")
            if part.empty:
                axis.text(0.5, 0.5, f"{metric}: not computed", ha="center", va="center", transform=axis.transAxes)
                continue
            stage_lists = set()
            for model, curve in part.groupby("model", sort=False):
                curve = curve.sort_values("stage_index")
                stage_lists.add(tuple(curve["stage"]))
                axis.plot(curve["stage_index"], curve["value"], marker="o", linewidth=1.3, label=str(model))
            if len(stage_lists) == 1:
                names = next(iter(stage_lists))
                axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
            else:
                axis.set_xlabel("stage index")
            if metric.startswith("probe_auc"):
                axis.axhline(0.5, color="0.7", linestyle="--", linewidth=0.8)
                axis.set_ylim(0.0, 1.02)
            axis.legend(fontsize=7)
    return save_figure(fig, out_png)
