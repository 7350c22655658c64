"""One pass of a model over a loader: the globally average-pooled output of each named stage.

Every layer analysis (linear probes, counterfactual KL, prediction depth) reads the stage
outputs captured with :class:`pipeline.networks.hooks.FeatureHooks`, pooled over all spatial
axes (2D and 3D alike), with the logits, integer targets and sample ids of the same pass.
Loaders yield MONAI-style dict batches. Models (and given probes) are put in eval mode and
restored afterwards, and run without gradients.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.utils import convert_to_tensor
from torch import nn

from pipeline.networks.hooks import FeatureHooks
from pipeline.networks.probes import StageProbes


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
                first = len(ids)  # read once: len(ids) grows while extending
                ids.extend(str(first + i) for i in range(size))
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
