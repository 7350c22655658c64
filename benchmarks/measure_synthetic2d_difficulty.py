"""Is the synthetic 2D finding learnable, yet harder than a corner patch shortcut?

Generates ``--n-train`` + ``--n-test`` images with ``data_prep.synthetic2d`` (PNG, as users get
them), then trains ``small_cnn`` (``pipeline.networks.build_network``) twice with the same seed:
    clean:  on the clean training images -> AUC on the clean test set (should be >= 0.85);
    biased: on images where ``PatchArtifact`` (bright 6x6 top-left patch, label-conditioned by
            ``ShortcutInjection``) is on 95 % of positives and 5 % of negatives -> AUC on the clean
            test set and on the bias-inverted test set (patch on 5 % of positives, 95 % of
            negatives; should be < 0.6).

    python benchmarks/measure_synthetic2d_difficulty.py --flavour thorax
    python benchmarks/measure_synthetic2d_difficulty.py --flavour dermoscopy --param malignancy=0.5

Takes a few minutes on 2 CPU cores with the defaults (4,000 training images, 6 epochs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import load_decathlon_datalist
from monai.metrics import compute_roc_auc
from PIL import Image

from data_prep import synthetic2d
from pipeline.atomic import write_text
from pipeline.networks import build_network
from pipeline.transforms import PatchArtifact, ShortcutInjection


def load_role(datalist: Path, role: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) scaled to [0, 1], labels and ids of one role."""
    items = load_decathlon_datalist(str(datalist), is_segmentation=False, data_list_key=role)
    images = []
    for item in items:
        array = np.asarray(Image.open(item["image"]), dtype=np.float32) / 255.0
        images.append(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))
    return np.stack(images), np.array([item["label"] for item in items]), [item["id"] for item in items]


def inject(images, labels, ids, mode: str, seed: int) -> tuple[np.ndarray, float]:
    """Images with the label-conditioned patch (rates 5 % negatives, 95 % positives) and the patch share."""
    patch = PatchArtifact(size=6, position="top_left", intensity=1.0, intensity_mode="absolute")
    injection = ShortcutInjection(patch, rates=(0.05, 0.95), mode=mode, seed=seed)
    out, present = [], []
    for image, label, sample_id in zip(images, labels, ids):
        result, bias = injection(image, int(label), sample_id)
        out.append(np.asarray(result, dtype=np.float32))
        present.append(bias)
    return np.stack(out), float(np.mean(present))


def train(images, labels, channels: int, epochs: int, batch: int, lr: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_network("small_cnn", spatial_dims=2, in_channels=channels, num_classes=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), batch):
            index = permutation[start : start + batch]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimiser.step()
    return model


def auc(model, images, labels) -> float:
    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [
                torch.softmax(model(torch.from_numpy(images[i : i + 256])), 1)[:, 1]
                for i in range(0, len(images), 256)
            ]
        )
    return float(compute_roc_auc(scores, torch.from_numpy(labels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", default="thorax", choices=sorted(synthetic2d.FLAVOURS))
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="generator parameter"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = {k: float(v) for k, v in (p.split("=", 1) for p in args.param)}
    n = args.n_train + args.n_test
    results = {
        "flavour": args.flavour,
        "params": params,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "epochs": args.epochs,
        "seed": args.seed,
    }
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        datalist = synthetic2d.generate(
            folder,
            n=n,
            size=args.size,
            flavour=args.flavour,
            seed=args.seed,
            val_fraction=0.0,
            test_fraction=args.n_test / n,
            teacher_size=0,
            progress=False,
            verbose=False,
            **params,
        )
        x_train, y_train, id_train = load_role(datalist, "train")
        x_test, y_test, id_test = load_role(datalist, "test")
        results["generate_s"] = round(time.perf_counter() - start, 1)
    channels = x_train.shape[1]

    start = time.perf_counter()
    clean = train(x_train, y_train, channels, args.epochs, args.batch, args.lr, args.seed)
    results["train_s"] = round(time.perf_counter() - start, 1)
    results["clean_model_clean_auc"] = auc(clean, x_test, y_test)

    x_biased, share = inject(x_train, y_train, id_train, "as_trained", args.seed)
    biased = train(x_biased, y_train, channels, args.epochs, args.batch, args.lr, args.seed)
    x_inverted, _ = inject(x_test, y_test, id_test, "inverted", args.seed + 1)
    results["biased_patch_share"] = share
    results["biased_model_clean_auc"] = auc(biased, x_test, y_test)
    results["biased_model_inverted_auc"] = auc(biased, x_inverted, y_test)
    for key, value in results.items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    verdict = results["clean_model_clean_auc"] >= 0.85 and results["biased_model_inverted_auc"] < 0.6
    print("targets (clean >= 0.85, inverted < 0.6):", "met" if verdict else "NOT met")
    if args.json:
        write_text(json.dumps(results, indent=1) + "\n", args.json)


if __name__ == "__main__":
    main()
