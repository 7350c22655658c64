"""The images an audit reads: one datalist role, preprocessed once as the model saw them in training.

Labels are optional: a role whose items lack ``label`` is audited on probability shifts only
(:attr:`AuditImages.labelled` False), and items with a label are used where a metric needs one.
A role larger than ``max_images`` is sub-sampled (seeded, without repetition); the report states
the sample size and the confidence intervals it gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import Compose
from tqdm import tqdm

from pipeline.audit.model import AuditModel, check_input_size
from pipeline.engine.datalist import _label, load_role

UNLABELLED = -1


@dataclass
class AuditImages:
    """Preprocessed images of one role.

    Attributes:
        images: (N, C, *spatial) float32, after ``preprocessing`` (the injection point).
        ids: sample ids as text.
        labels: (N,) int64 class indices, :data:`UNLABELLED` (-1) where the item has none.
        role: the datalist role.
        n_role: items in the role before sub-sampling.
    """

    images: torch.Tensor
    ids: list[str]
    labels: np.ndarray
    role: str
    n_role: int

    @property
    def labelled(self) -> bool:
        """True when at least one item has a label."""
        return bool((self.labels != UNLABELLED).any())


def read_items(datalist: str | Path, role: str) -> list[dict]:
    """The items of ``role``: validated by :func:`load_role` when every item has a label, else read
    as they are (ids default to the image path) with the labels they have checked.

    Raises:
        ValueError: the datalist or role is missing, an item has no image, ids repeat, a label
            is not 0/1, or an image file is missing.
    """
    path = Path(datalist)
    if not path.is_file():
        raise ValueError(f"datalist '{path}' does not exist (expected a datalist JSON)")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist '{path}' is not valid JSON: {err}") from err
    if not isinstance(content, dict) or not isinstance(content.get(role), list) or not content[role]:
        roles = (
            sorted(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else []
        )
        raise ValueError(f"datalist '{path}' has no non-empty role '{role}'; roles present: {roles}")
    if all(isinstance(item, dict) and "label" in item and "id" in item for item in content[role]):
        return load_role(path, role)
    items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=role)
    seen = set()
    for index, item in enumerate(items):
        if "image" not in item:
            raise ValueError(
                f"datalist '{path}' role '{role}' item {index} has no 'image'; has {sorted(item)}"
            )
        item.setdefault("id", str(item["image"]))
        if "label" in item:
            item["label"] = _label(item["label"], f"datalist '{path}' role '{role}' item {index}")
        if str(item["id"]) in seen:
            raise ValueError(f"datalist '{path}' role '{role}' repeats id {item['id']!r}")
        seen.add(str(item["id"]))
        if not Path(item["image"]).is_file():
            raise ValueError(
                f"datalist '{path}' role '{role}' item {index}: image file {item['image']} is missing"
            )
    return items


def subsample(n: int, max_images: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of at most ``max_images`` of ``n`` items (all of them when None or enough)."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    if max_images < 1:
        raise ValueError(f"max_images must be a positive number of images, got {max_images}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))


def load_images(
    model: AuditModel, datalist: str | Path, role: str = "test", max_images: int | None = 1000, seed: int = 0,
    progress: bool = True,
) -> AuditImages:  # fmt: skip
    """Read and preprocess (``model.preprocessing``) the items of ``role``, sub-sampled to ``max_images``.

    Raises:
        ValueError: as :func:`read_items`, or (:func:`check_input_size`) when the first image does not
            fit the network.
    """
    items = read_items(datalist, role)
    chosen = [items[i] for i in subsample(len(items), max_images, seed)]
    transform = Compose(model.preprocessing)
    images, ids, labels = [], [], []
    for index, item in enumerate(tqdm(chosen, desc=f"loading {role}", unit="image", disable=not progress)):
        image = torch.as_tensor(transform(dict(item))["image"]).as_subclass(torch.Tensor).float()
        if index == 0:
            check_input_size(model, image, f"image {item['image']} (datalist '{datalist}' role '{role}')")
        images.append(image)
        ids.append(str(item["id"]))
        labels.append(int(item.get("label", UNLABELLED)))
    return AuditImages(torch.stack(images), ids, np.asarray(labels, dtype=np.int64), role, len(items))


def as_batches(images: torch.Tensor, ids: Sequence[str], labels: np.ndarray, batch_size: int = 64):
    """Dict batches (``image``, ``id``, ``label``) for the layer-analysis code, which reads loaders."""
    return [
        {
            "image": images[i : i + batch_size],
            "id": list(ids[i : i + batch_size]),
            "label": torch.as_tensor(labels[i : i + batch_size]),
        }  # fmt: skip
        for i in range(0, len(ids), batch_size)
    ]
