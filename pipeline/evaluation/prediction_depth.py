"""Prediction depth (Baldock et al., NeurIPS 2021) from per-stage features: k-NN probes and depths.

A k-NN classifier per stage uses the pooled features of a memory set (the training data) with
their labels; a sample's prediction depth is the first stage index from which the k-NN
predictions of that stage and of every deeper stage agree with the network's final prediction.
The network's output counts as the layer after the last stage (index ``n_stages``), which always
agrees with itself, so depths lie in ``[0, n_stages]``. :func:`prediction_depths` works on
feature tensors, :func:`features_depth` on collected :class:`LayerFeatures`, and
:func:`prediction_depth` runs a model over two loaders to get them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from pipeline.evaluation.layer_features import LayerFeatures, collect_layer_features

_QUERY_CHUNK = 1024  # query rows per distance matrix, to bound memory on large sets


def _matrix(name: str, values: torch.Tensor) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or values.ndim != 2:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{name} must be a 2D tensor (samples, features), got {shape}")
    return values.detach().to("cpu", torch.float64)


def _class_vector(name: str, values, length: int) -> torch.Tensor:
    vector = torch.as_tensor(values).detach().to("cpu").reshape(-1)
    if vector.is_floating_point():
        if not torch.equal(vector, vector.round()):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values")
        vector = vector.long()
    if vector.numel() != length or (length and int(vector.min()) < 0):
        raise ValueError(f"{name} must hold {length} non-negative class indices, got {vector.numel()} values")
    return vector.long()


def knn_predict(memory: torch.Tensor, memory_labels, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Majority vote of the ``k`` nearest memory samples (Euclidean, ``torch.cdist``) for each query.

    Ties in distance go to the earlier memory sample; ties in votes go to the class of the
    nearest neighbour among the tied classes, so the result is deterministic.

    Args:
        memory: (M, C) features of the memory set.
        memory_labels: M class indices.
        queries: (N, C) features to classify.
        k: neighbours per query, 1 <= k <= M.

    Returns:
        (N,) int64 predicted classes.

    Raises:
        ValueError: for shapes that do not match or ``k`` outside [1, M].
    """
    memory, queries = _matrix("memory", memory), _matrix("queries", queries)
    labels = _class_vector("memory_labels", memory_labels, memory.shape[0])
    if memory.shape[1] != queries.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} features but memory has {memory.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= memory.shape[0]:
        raise ValueError(f"k must be an integer in [1, {memory.shape[0]}] (the memory size), got {k!r}")
    n_classes = int(labels.max()) + 1
    predictions = []
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        distances = torch.cdist(queries[start : start + _QUERY_CHUNK], memory)
        nearest = torch.sort(distances, dim=1, stable=True).indices[:, :k]
        votes = torch.nn.functional.one_hot(labels[nearest], n_classes)  # (n, k, classes)
        counts = votes.sum(dim=1)
        rank = torch.arange(k).view(1, k, 1).expand_as(votes)
        first_rank = torch.where(votes.bool(), rank, torch.full_like(rank, k)).min(dim=1).values
        predictions.append(torch.argmax(counts * (k + 1) - first_rank, dim=1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def depth_from_agreement(agreement: torch.Tensor) -> torch.Tensor:
    """Depth per sample from a (N, n_stages) table "stage prediction agrees with the final one".

    Returns:
        (N,) int64: the first stage index from which every deeper stage agrees; ``n_stages`` when
        the last stage disagrees.

    Raises:
        ValueError: for a tensor that is not 2D.
    """
    if not isinstance(agreement, torch.Tensor) or agreement.ndim != 2:
        raise ValueError(f"agreement must be a 2D tensor (samples, stages), got {getattr(agreement, 'shape', agreement)}")
    agrees = agreement.detach().to("cpu").bool().long()
    agreeing_tail = agrees.flip(1).cumprod(dim=1).sum(dim=1)  # length of the all-agreeing run at the end
    return agrees.shape[1] - agreeing_tail


def knn_stage_predictions(
    memory_features: Mapping[str, torch.Tensor],
    memory_labels,
    query_features: Mapping[str, torch.Tensor],
    k: int,
) -> torch.Tensor:
    """k-NN predictions of every stage: (N, n_stages), stages in the order of ``query_features``.

    Raises:
        ValueError: for a stage missing from ``memory_features`` or bad shapes / ``k``.
    """
    if not query_features:
        raise ValueError("query_features must hold at least one stage")
    missing = [stage for stage in query_features if stage not in memory_features]
    if missing:
        raise ValueError(f"memory_features lack stage(s) {missing}; got {list(memory_features)}")
    columns = [knn_predict(memory_features[s], memory_labels, query_features[s], k) for s in query_features]
    return torch.stack(columns, dim=1)


def stage_agreement(
    memory_features: Mapping[str, torch.Tensor],
    memory_labels,
    query_features: Mapping[str, torch.Tensor],
    final_predictions,
    k: int,
) -> torch.Tensor:
    """(N, n_stages) bool: does each stage's k-NN prediction agree with the network's final one?

    Raises:
        ValueError: for missing stages, mismatched sizes or a bad ``k``.
    """
    stage_predictions = knn_stage_predictions(memory_features, memory_labels, query_features, k)
    final = _class_vector("final_predictions", final_predictions, stage_predictions.shape[0])
    return stage_predictions == final.unsqueeze(1)


def prediction_depths(
    memory_features: Mapping[str, torch.Tensor],
    memory_labels,
    query_features: Mapping[str, torch.Tensor],
    final_predictions,
    k: int,
) -> torch.Tensor:
    """Prediction depth of each query sample.

    Args:
        memory_features: stage -> (M, C) pooled features of the memory (training) set.
        memory_labels: M class labels of the memory set.
        query_features: stage -> (N, C) pooled features of the samples to score, stages in order.
        final_predictions: N classes predicted by the network's output.
        k: neighbours of the k-NN probes.

    Returns:
        (N,) int64 depths in [0, n_stages].

    Raises:
        ValueError: for missing stages, mismatched sizes or a bad ``k``.
    """
    return depth_from_agreement(stage_agreement(memory_features, memory_labels, query_features, final_predictions, k))


@dataclass(frozen=True)
class PredictionDepth:
    """Per-sample prediction depths of one model on one set.

    Attributes:
        per_sample: one row per sample: ``id``, ``label``, ``bias``, ``prediction`` (final) and
            ``depth`` (0 .. ``n_stages``).
        stages: the probed stages, in order (depth ``i`` = from ``stages[i]`` on).
        k: neighbours of the k-NN probes.
    """

    per_sample: pd.DataFrame
    stages: tuple[str, ...]
    k: int

    @property
    def n_stages(self) -> int:
        """Number of probed stages (the depth of a sample only the output decides)."""
        return len(self.stages)

    @property
    def mean(self) -> float:
        """Mean depth over all samples."""
        return float(self.per_sample["depth"].mean())

    def mean_by_bias(self) -> dict[int, float]:
        """Mean depth per bias group ({0: without artifact, 1: with artifact}); absent groups are left out."""
        means = self.per_sample.groupby("bias")["depth"].mean()
        return {int(group): float(value) for group, value in means.items()}


def features_depth(
    memory: LayerFeatures, queries: LayerFeatures, k: int, label_key: str = "label", bias_key: str = "bias"
) -> tuple[PredictionDepth, torch.Tensor]:
    """Depths of ``queries`` against the k-NN memory ``memory`` (its ``label_key`` labels).

    Returns:
        The :class:`PredictionDepth` and the (N, n_stages) agreement table it comes from.
    """
    final = queries.predictions
    agreement = stage_agreement(memory.pooled, memory.targets[label_key], queries.pooled, final, k)
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
        ValueError: for ``k`` outside [1, training set size], or as
            :func:`pipeline.evaluation.layer_features.collect_layer_features`.
    """
    memory = collect_layer_features(
        model, stages, loader_train, [label_key], image_key=image_key, id_key=None, device=device
    )
    queries = collect_layer_features(
        model, stages, loader_eval, [label_key, bias_key], image_key=image_key, id_key=id_key, device=device
    )
    return features_depth(memory, queries, k, label_key, bias_key)[0]
