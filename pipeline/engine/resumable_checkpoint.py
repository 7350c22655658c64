"""Resume an interrupted training exactly, and only the run it came from.

MONAI's ``CheckpointSaver`` (training.yaml, ``save_interval: 1``) writes
``checkpoint_epoch=N.pt`` after every epoch (atomically, see :func:`atomic_writes`); with
``resume: true`` MONAI's ``CheckpointLoader`` loads the newest one. Beside network, optimizer,
LR schedule and trainer state, the checkpoint holds what else decides the rest of the run: the random generators (:class:`RandomStates`), the best-model and
early-stopping bookkeeping (:class:`ValidationProgress`) and the config fingerprint
(:class:`ConfigFingerprint`, :func:`config_fingerprint`), which :func:`resume_path` checks
before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

RESUME_PATTERN = "checkpoint_epoch=*.pt"
# config ids that change where and how a run reports, not what it computes
NEUTRAL_KEYS = frozenset(
    {"_meta_", "resume", "progress_bar", "tensorboard", "output_root", "bundle_name", "config_fingerprint"}
)


class ResumeError(ValueError):
    """No checkpoint to resume from, or one from another configuration."""


def config_fingerprint(config_files: Sequence[str | Path], settings: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the merged, unresolved config (files, then ``settings`` as in ConfigWorkflow),
    without :data:`NEUTRAL_KEYS`: equal for runs that compute the same thing."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.update(dict(settings or {}))
    content = {k: v for k, v in parser.get().items() if k not in NEUTRAL_KEYS}
    text = json.dumps(content, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigFingerprint:
    """The run's config fingerprint as a checkpoint entry (checked by :func:`resume_path`)."""

    def __init__(self, value: str | None):
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping) -> None:
        pass  # compared before loading, in resume_path


def resume_path(ckpt_dir: str | Path, fingerprint: str | None) -> str:
    """The newest per-epoch checkpoint in ``ckpt_dir``, after checking it belongs to this config.

    Raises:
        ResumeError: no ``checkpoint_epoch=*.pt`` in ``ckpt_dir``, or the newest was written by a
            run with another config fingerprint (or none).
        ValueError: the file cannot be read (corrupt, truncated).
    """
    from pipeline.networks.checkpoint import read_checkpoint

    candidates = sorted(Path(ckpt_dir).glob(RESUME_PATTERN), key=lambda p: p.stat().st_mtime_ns)
    if not candidates:
        raise ResumeError(
            f"resume: no per-epoch checkpoint ({RESUME_PATTERN}) in {ckpt_dir}; "
            "start the run without --resume (a run writes one after each completed epoch)"
        )
    path = candidates[-1]
    content = read_checkpoint(path, "a per-epoch training checkpoint")
    saved = content.get("fingerprint", {}).get("value") if isinstance(content, Mapping) else None
    if saved != fingerprint:
        raise ResumeError(
            f"resume: {path} was written by a run with another configuration (fingerprint {saved}, "
            f"this run {fingerprint}): network, data, epochs, seed or another setting differ. "
            "Resume with the settings of that run, or start without --resume (or with another output_root)"
        )
    return str(path)


def atomic_writes(saver):
    """``saver`` (a MONAI ``CheckpointSaver``) writing each file to a temporary name, then renaming
    it: MONAI turns ignite's atomic writes off (for file permissions, which ignite now sets
    itself), and a run killed mid-write would leave a truncated checkpoint behind."""
    for checkpoint in (saver._final_checkpoint, saver._key_metric_checkpoint, saver._interval_checkpoint):
        if checkpoint is not None:
            checkpoint.save_handler._atomic = True
    return saver


def _random_generators(obj: Any, seen: set[int] | None = None) -> Iterator[np.random.RandomState]:
    """Every numpy generator (``R``) of a (nested) transform, inner transforms included (a
    dictionary transform draws from its array transform's ``R``), in a fixed order."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _random_generators(item, seen)
        return
    if not type(obj).__module__.startswith(("monai.", "pipeline.")) or not hasattr(obj, "__dict__"):
        return
    if isinstance(getattr(obj, "R", None), np.random.RandomState) and id(obj.R) not in seen:
        seen.add(id(obj.R))
        yield obj.R
    for key in sorted(obj.__dict__):
        if key != "R":
            yield from _random_generators(obj.__dict__[key], seen)


def _numpy_state(state: tuple) -> dict:
    name, keys, pos, has_gauss, gauss = state
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip


def _set_numpy_state(generator, state: Mapping) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    generator.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["gauss"]))


class RandomStates:
    """Global torch/numpy/random generators, the training data's random transforms and its
    sampler's generator, as one checkpoint entry: a resumed run draws what an uninterrupted run
    would have drawn (same shuffles, same augmentations)."""

    def __init__(self, dataloader: torch.utils.data.DataLoader):
        self.dataloader = dataloader

    def _transforms(self) -> list[np.random.RandomState]:
        return list(_random_generators(getattr(self.dataloader.dataset, "transform", None)))

    def _generators(self) -> list[torch.Generator]:
        found = [self.dataloader.generator, getattr(self.dataloader.sampler, "generator", None)]
        return [g for g in found if isinstance(g, torch.Generator)]

    def state_dict(self) -> dict:
        version, internal, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(np.random.get_state()),
            "python": {"version": version, "state": list(internal), "gauss": gauss},
            "transforms": [_numpy_state(r.get_state()) for r in self._transforms()],
            "generators": [g.get_state() for g in self._generators()],
        }

    def load_state_dict(self, state: Mapping) -> None:
        transforms, generators = self._transforms(), self._generators()
        if len(state["transforms"]) != len(transforms) or len(state["generators"]) != len(generators):
            raise ResumeError("resume: the checkpoint's random transforms or samplers differ from this run's")
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        _set_numpy_state(np.random, state["numpy"])
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
        for transform, saved in zip(transforms, state["transforms"]):
            _set_numpy_state(transform, saved)
        for generator, saved in zip(generators, state["generators"]):
            generator.set_state(saved)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (``weights_only`` loading refuses numpy objects)."""
    return value.item() if isinstance(value, np.generic) else value


class ValidationProgress:
    """What validation has seen so far: the evaluator's best metric, the best-model saver's
    record (so ``model.pt`` is replaced only by a better epoch) and early stopping's counter."""

    def __init__(self, evaluator, best_model_saver, early_stopping):
        self.evaluator, self.best_model_saver, self.early_stopping = (
            evaluator,
            best_model_saver,
            early_stopping,
        )

    def state_dict(self) -> dict:
        saver = self.best_model_saver._key_metric_checkpoint
        stopper = self.early_stopping._handler
        return {
            "best_metric": float(self.evaluator.state.best_metric),
            "best_metric_epoch": int(self.evaluator.state.best_metric_epoch),
            "saver": [[float(item.priority), item.filename] for item in saver._saved] if saver else [],
            "early_stopping": {k: _plain(v) for k, v in stopper.state_dict().items()} if stopper else {},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["saver"]:
            self.best_model_saver.load_state_dict({"_saved": [tuple(item) for item in state["saver"]]})
        if state["early_stopping"] and self.early_stopping._handler is not None:
            self.early_stopping._handler.load_state_dict(state["early_stopping"])
