"""Tiny data and models for the audit tests: a shortcut model trained in a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from pipeline.audit.data import read_items
from pipeline.transforms import ShortcutInjection

SIZE = 32
PATCH = {"_target_": "PatchArtifact", "size": 4, "position": "top_left", "intensity": 1.0}
# a MONAI network of fixed input size (its last layer reads every position: the shortcut stays where it was)
NETWORK_CONFIG = {
    "network_def": {"_target_": "monai.networks.nets.Classifier", "in_shape": [1, SIZE, SIZE], "classes": 2,
                    "channels": [4, 8], "strides": [2, 2]},
    "spatial_dims": 2, "image_size": [SIZE, SIZE], "audit_stages": ["net.layer_0", "net.layer_1"],
}  # fmt: skip


def write_yaml(content, path: Path) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def train_shortcut_model(datalist: Path, out: Path, artifact=PATCH, epochs: int = 12) -> Path:
    """Train the network of :data:`NETWORK_CONFIG` on the ``train`` role with ``artifact`` on every
    positive and on no negative; returns the checkpoint (CheckpointSaver's layout)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from pipeline.bundles import BUNDLES_ROOT

    parser = ConfigParser()
    parser.read_config([str(BUNDLES_ROOT / "common" / "configs" / "base.yaml")])
    parser["datalist"] = str(datalist)
    for key, value in NETWORK_CONFIG.items():
        parser[key] = value
    transform = Compose(parser.get_parsed_content("preprocessing"))
    injection = ShortcutInjection(artifact, rates=[0.0, 1.0], seed=0)
    images, labels = [], []
    for item in read_items(datalist, "train"):
        image = torch.as_tensor(transform(dict(item))["image"]).as_subclass(torch.Tensor).float()
        images.append(torch.as_tensor(injection(image, item["label"], item["id"])[0]))
        labels.append(item["label"])
    x, y = torch.stack(images), torch.as_tensor(labels)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(epochs):
        for start in range(0, len(y), 32):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(network(x[start : start + 32]), y[start : start + 32])
            loss.backward()
            optimizer.step()
    path = out / "model.pt"
    torch.save({"network": network.state_dict()}, path)
    return path


def strip_labels(datalist: Path, out: Path, keep: int = 0) -> Path:
    """A copy of ``datalist`` whose ``test`` items lose their labels (all but the first ``keep``)."""
    content = json.loads(datalist.read_text())
    base = datalist.parent
    for items in content.values():
        if isinstance(items, list):
            for item in items:
                item["image"] = str(base / item["image"])
    for index, item in enumerate(content["test"]):
        if index >= keep:
            item.pop("label")
    path = out / "unlabelled.json"
    path.write_text(json.dumps(content))
    return path
