"""Label-conditioned shortcut injection: decide per sample whether the artifact is present.

The decision is a pure function of (seed, sample id, label, mode, rates), computed with a stable hash
(SHA-256), so a sample gets the same decision every epoch, in every DataLoader worker and every run.
The artifact's random parts (noise, random position, bias-field coefficients) are seeded from
(seed, sample id) too, so "always" and "never" runs make counterfactual pairs that differ only by
the artifact. Because the output depends only on the item and the seed, ``ShortcutInjectiond`` is
not a randomizable transform and a CacheDataset may cache it.

Pre-biased data (``artifact=None``): datasets whose bias is already in the images (SimBA as
published) carry the bias flag in the datalist. Nothing is injected; each mode sees the items of
the matching existing group instead (:meth:`ShortcutInjectiond.select`, :func:`prebiased_items`):
"as_trained" all items, "never" the bias-free ones, "always" the biased ones, "inverted" a seeded
resample in which each class has the other class's bias rate. There are no counterfactual pairs.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
from collections.abc import Hashable, Mapping, Sequence
from pydoc import locate
from typing import Any, Callable

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import MAX_SEED

from pipeline.transforms.base import Artifact, check_choice, check_number

MODES = ("as_trained", "never", "always", "inverted")


def _stable_int(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _sample_key(sample_id: Any) -> str:
    """Canonical text of a sample id (str or int; 5, "5", np.int64(5) and tensor(5) are the same id)."""
    value = sample_id
    if isinstance(value, (np.ndarray, torch.Tensor)) and int(np.prod(value.shape)) == 1:
        value = value.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"sample id must be a str or an int, got {sample_id!r} ({type(sample_id).__name__}).")
    return str(value)


def _class_index(label: Any, n_classes: int) -> int:
    """Class index from an int, a whole float or a 0-d / 1-element array or tensor."""
    value = label
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if int(np.prod(value.shape)) != 1:
            raise ValueError(f"label must be a class index (one element), got shape {tuple(value.shape)}.")
        value = value.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"label must be an integer class index, got {label!r}.")
    if not 0 <= value < n_classes:
        raise ValueError(f"label={value} has no rate: rates cover classes 0..{n_classes - 1}.")
    return value


def _check_rates(rates: Any) -> tuple[float, ...]:
    """Rates per class from a list (indexed by class) or a dict {class: rate} with classes 0..n-1."""
    if isinstance(rates, Mapping):
        try:
            by_class = {int(k): v for k, v in rates.items()}
        except (TypeError, ValueError):
            raise ValueError(f"rates keys must be class indices 0..n-1, got {list(rates)!r}.") from None
        if sorted(by_class) != list(range(len(by_class))):
            raise ValueError(f"rates keys must be the classes 0..n-1, got {sorted(by_class)!r}.")
        values = [by_class[c] for c in range(len(by_class))]
    elif isinstance(rates, Sequence) and not isinstance(rates, str):
        values = list(rates)
    else:
        raise ValueError(f"rates must be a list of probabilities per class or a dict {{class: rate}}, got {rates!r}.")
    if not values:
        raise ValueError("rates must give a probability for at least one class, got none.")
    return tuple(check_number(r, "rates", 0.0, 1.0) for r in values)


def _bias_flag(item: Mapping, bias_key: str) -> int:
    """The 0/1 bias flag a pre-biased datalist item carries."""
    if bias_key not in item:
        raise ValueError(
            f"pre-biased data (artifact: null) reads the bias flag from item key {bias_key!r}, absent in item "
            f"{item.get('id', '?')!r} (keys: {sorted(map(str, item))}): the bias-free and bias-inverted sets "
            "need a 0/1 flag per item; write it with data_prep (e.g. `python -m data_prep simba`, or "
            "`data_prep table` with a `bias` column), or configure an artifact to inject (--artifact SPEC)."
        )
    value = item[bias_key]
    if isinstance(value, (np.ndarray, torch.Tensor)) and int(np.prod(value.shape)) == 1:
        value = value.reshape(-1)[0].item()
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"item {item.get('id', '?')!r} has {bias_key}={value!r}; a bias flag is 0 or 1.")
    return int(value)


def prebiased_items(
    items: Sequence[Mapping],
    mode: str,
    seed: int = 0,
    label_key: str = "label",
    bias_key: str = "bias",
) -> list:
    """The items of pre-biased data that ``mode`` sees (the images already hold the bias).

    "as_trained": all items, with or without a flag; "never": bias 0; "always": bias 1; "inverted": for each class, the
    largest subsample (without repetition, drawn with ``seed``) whose bias rate is the other
    class's rate in ``items``, so the bias/class correlation is reversed. Item order is kept.

    Raises:
        ValueError: an unknown mode, an item without a 0/1 bias flag, or "inverted" for labels other
            than the two classes 0 and 1.
    """
    check_choice(mode, "mode", MODES)
    if mode == "as_trained":  # every item, flagged or not (images as stored need no flag)
        return list(items)
    flags = [_bias_flag(item, bias_key) for item in items]
    if mode in ("never", "always"):
        return [item for item, flag in zip(items, flags) if flag == int(mode == "always")]
    labels = [_class_index(item[label_key], 2) for item in items]
    members: dict[tuple[int, int], list[int]] = {(c, b): [] for c in (0, 1) for b in (0, 1)}
    for index, group in enumerate(zip(labels, flags)):
        members[group].append(index)
    rates = {c: len(members[c, 1]) / max(1, len(members[c, 0]) + len(members[c, 1])) for c in (0, 1)}
    rng = np.random.default_rng(_stable_int(seed, "inverted") % 2**32)
    chosen: list[int] = []
    for c in (0, 1):
        target = rates[1 - c]
        available = {b: len(members[c, b]) for b in (0, 1)}
        limits = [available[1] / target if target > 0 else np.inf, available[0] / (1 - target) if target < 1 else np.inf]
        size = int(np.floor(min(limits) + 1e-9))
        with_bias = min(available[1], int(round(size * target)))
        for flag, count in ((1, with_bias), (0, min(available[0], size - with_bias))):
            chosen += [members[c, flag][i] for i in rng.choice(available[flag], size=count, replace=False)]
    return [items[i] for i in sorted(chosen)]


def build_artifact(artifact: Any) -> Callable:
    """A private copy of `artifact`: an artifact (or any MONAI array transform) or a dict config.

    A dict config has ``_target_`` (a class name from ``pipeline.transforms`` or a full import path)
    and the class's keyword arguments, e.g. ``{"_target_": "PatchArtifact", "size": 4}``.

    Raises:
        ValueError: for a dict without a string ``_target_``, an unknown target, or a non-callable.
    """
    if isinstance(artifact, Mapping):
        config = dict(artifact)
        target = config.pop("_target_", None)
        if not isinstance(target, str):
            raise ValueError(f"artifact config needs a '_target_' class name, got {artifact!r}.")
        if "." in target:
            component = locate(target)
        else:
            component = getattr(importlib.import_module("pipeline.transforms"), target, None)
        if not callable(component):
            raise ValueError(
                f"artifact '_target_'={target!r} is not a class in pipeline.transforms nor an importable path."
            )
        return component(**config)
    if not callable(artifact):
        raise ValueError(f"artifact must be an artifact instance or a dict config, got {artifact!r}.")
    return copy.deepcopy(artifact)


class ShortcutInjection(Transform):
    """Adds `artifact` to an image with a probability that depends on its class.

    ``inj(img, label, sample_id)`` returns ``(img, bias)``: bias is 1 when the artifact was added.

    Args:
        artifact: an artifact instance (copied) or a dict config, see :func:`build_artifact`.
        rates: probability of the artifact per class: a list indexed by class or a dict {class: rate}.
        mode: "as_trained" (the rates), "never" (bias-free), "always", or "inverted" (the two classes'
            rates swapped; needs exactly two classes).
        seed: seed of the decisions and of the artifact's random parts.
        per_sample_artifact_seed: seed the artifact's random parts from (seed, sample id); when False
            the artifact is seeded once with `seed` and its draws follow call order.

    Raises:
        ValueError: for rates outside [0, 1], an unknown mode, "inverted" without two classes, a
            non-integer seed or a bad artifact.
    """

    def __init__(
        self,
        artifact: Any,
        rates: Any = (0.05, 0.95),
        mode: str = "as_trained",
        seed: int = 0,
        per_sample_artifact_seed: bool = True,
    ) -> None:
        self.artifact = build_artifact(artifact)
        self.rates = _check_rates(rates)
        self.mode = check_choice(mode, "mode", MODES)
        if self.mode == "inverted" and len(self.rates) != 2:
            raise ValueError(f"mode='inverted' swaps the rates of two classes, but rates={list(self.rates)!r}.")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        self.seed = int(seed)
        self.per_sample_artifact_seed = bool(per_sample_artifact_seed)
        if not self.per_sample_artifact_seed and isinstance(self.artifact, Randomizable):
            self.artifact.set_random_state(seed=self.seed % MAX_SEED)

    def decide(self, label: Any, sample_id: Any) -> int:
        """1 if the sample gets the artifact in this mode, else 0.

        Raises:
            ValueError: for a label that is not a class index covered by the rates, or a bad sample id.
        """
        index = _class_index(label, len(self.rates))
        key = _sample_key(sample_id)
        if self.mode in ("never", "always"):
            return int(self.mode == "always")
        rates = self.rates if self.mode == "as_trained" else self.rates[::-1]
        return int(_stable_int(self.seed, "decision", key) / 2**64 < rates[index])

    def add_artifact(self, img: NdarrayOrTensor, sample_id: Any, randomize: bool = True) -> NdarrayOrTensor:
        """`img` with the artifact, whatever the decision (its random parts seeded from the sample id).

        Args:
            img: the image.
            sample_id: the sample's id.
            randomize: without per-sample seeding, False repeats the artifact's previous draw.
        """
        if self.per_sample_artifact_seed:
            if isinstance(self.artifact, Randomizable):
                self.artifact.set_random_state(seed=_stable_int(self.seed, "artifact", _sample_key(sample_id)) % MAX_SEED)
        elif not randomize and isinstance(self.artifact, Artifact):
            return self.artifact(img, randomize=False)
        return self.artifact(img)

    def __call__(self, img: NdarrayOrTensor, label: Any, sample_id: Any) -> tuple[NdarrayOrTensor, int]:
        """Returns (image, bias); the image is the input itself when the artifact is not added."""
        bias = self.decide(label, sample_id)
        return (self.add_artifact(img, sample_id) if bias else img), bias


class ShortcutInjectiond(MapTransform):
    """Dictionary twin of :class:`ShortcutInjection`: reads the label and the sample id from the item,
    adds the artifact to `keys` when the decision says so (same draw for every key) and records the
    decision as ``item[bias_key]`` (int 0/1, in every mode).

    With ``artifact=None`` (pre-biased data) the images pass through unchanged and ``bias`` is
    the item's own flag, which must agree with the mode ("never": 0, "always": 1): feed it the
    items :meth:`select` returns.

    An item whose ``clean_key`` is true is known to be free of the artifact (e.g. the teacher's
    bias-free images mixed into a training set: :func:`pipeline.engine.datalist.with_clean_role`): it
    passes through unchanged with ``bias`` 0 in every mode (the mark itself is dropped).

    Args:
        keys: image keys that get the artifact.
        artifact: see :class:`ShortcutInjection`; None: the data is pre-biased (nothing injected).
        rates, mode, seed, per_sample_artifact_seed: see :class:`ShortcutInjection` (rates unused
            for pre-biased data).
        label_key: key of the class label (int, or 0-d/1-element array or tensor).
        id_key: key of the sample id (str or int).
        bias_key: key the decision is written to.
        per_sample_artifact_seed: see :class:`ShortcutInjection`.
        clean_key: key that marks an item as free of the artifact (never injected, ``bias`` 0).
        allow_missing_keys: skip image keys that are absent instead of raising KeyError.

    Raises:
        ValueError: as :class:`ShortcutInjection`; at call time when the label or id key is missing,
            or a clean pre-biased item is flagged 1.
    """

    def __init__(
        self,
        keys: KeysCollection,
        artifact: Any,
        rates: Any = (0.05, 0.95),
        mode: str = "as_trained",
        seed: int = 0,
        label_key: str = "label",
        id_key: str = "id",
        bias_key: str = "bias",
        per_sample_artifact_seed: bool = True,
        clean_key: str = "clean",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clean_key = clean_key
        self.prebiased = artifact is None
        self.mode = check_choice(mode, "mode", MODES)
        self.seed = seed
        self.injection = None if self.prebiased else ShortcutInjection(artifact, rates, mode, seed, per_sample_artifact_seed)
        self.label_key, self.id_key, self.bias_key = label_key, id_key, bias_key

    def select(self, items: Sequence[Mapping]) -> list:
        """The items this mode evaluates: all of them when injecting, else :func:`prebiased_items`."""
        if not self.prebiased:
            return list(items)
        return prebiased_items(items, self.mode, self.seed, self.label_key, self.bias_key)

    def decide_item(self, item: Mapping[Hashable, Any]) -> int | None:
        """The item's bias flag in this mode: the injection decision, or the pre-biased item's own flag
        (None for an unflagged item in "as_trained": images as stored, nothing known of a shortcut).

        Raises:
            ValueError: the label or id key is missing (injection), the flag is missing or not 0/1,
                or (pre-biased) it contradicts the mode: items not chosen by :meth:`select`, or
                a clean item flagged 1.
        """
        if item.get(self.clean_key):
            if self.prebiased and self.bias_key in item and _bias_flag(item, self.bias_key) != 0:
                raise ValueError(
                    f"item {item.get(self.id_key, '?')!r} is marked {self.clean_key!r} (free of the artifact) "
                    f"but has {self.bias_key}=1: a clean role must hold only images without the artifact."
                )
            return 0
        if self.prebiased:
            if self.mode == "as_trained" and self.bias_key not in item:
                return None  # images as stored, shortcut unknown: a user's own data without flags
            bias = _bias_flag(item, self.bias_key)
            if self.mode in ("never", "always") and bias != int(self.mode == "always"):
                raise ValueError(
                    f"pre-biased item {item.get(self.id_key, '?')!r} has {self.bias_key}={bias} in mode {self.mode!r}: "
                    "nothing is injected or removed, so pass the items through ShortcutInjectiond.select() first."
                )
            return bias
        for name, key in (("label_key", self.label_key), ("id_key", self.id_key)):
            if key not in item:
                raise ValueError(f"{name}={key!r} is not in the item; available keys: {sorted(map(str, item))}.")
        return self.injection.decide(item[self.label_key], item[self.id_key])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        bias = self.decide_item(d)
        d.pop(self.clean_key, None)  # recorded as bias 0; batches of clean and other items collate alike
        if bias and not self.prebiased:
            for i, key in enumerate(self.key_iterator(d)):
                d[key] = self.injection.add_artifact(d[key], d[self.id_key], randomize=i == 0)
        if bias is not None:
            d[self.bias_key] = bias
        return d
