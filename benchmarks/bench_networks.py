"""Training throughput of the registry's networks at the scenarios' sizes, measured side by side.

Each case builds a network, runs warm-up steps, then times ``--iterations`` training steps
(forward, cross-entropy, backward, Adam) on a fixed random batch; images per second, and the
ratio to the first case, go to a CSV. The cases are the architecture runs' networks
(benchmarks/configs/architecture_runs.yaml), with MONAI's ResNet-18 stem at stride 1 beside the
ImageNet stem (stride 2) the runs use:

    python -m benchmarks networks -- --out benchmarks/results/network_speed.csv
    python -m benchmarks.bench_networks --only resnet18_2d resnet18_2d_stride1 --iterations 10
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Sequence

import pandas as pd
import torch

from pipeline.atomic import write_csv
from pipeline.networks import build_network

# name -> (network, spatial_dims, side in pixels/voxels, batch size, network options)
CASES: dict[str, tuple[str, int, int, int, dict[str, Any]]] = {
    "small_cnn_2d": ("small_cnn", 2, 64, 32, {}),
    "resnet18_2d": ("resnet18", 2, 64, 32, {"conv1_t_stride": 2}),
    "resnet18_2d_stride1": ("resnet18", 2, 64, 32, {}),
    "densenet121_2d": ("densenet121", 2, 64, 32, {}),
    "alexnet_2d": ("alexnet", 2, 64, 32, {"stem_kernel_size": 5, "stem_stride": 2, "stem_padding": 2}),
    "small_cnn_3d": ("small_cnn", 3, 32, 16, {}),
    "resnet18_3d": ("resnet18", 3, 32, 16, {"conv1_t_stride": 2}),
    "simba_cnn_3d": ("simba_cnn", 3, 32, 16, {}),
}


def images_per_second(
    network: str, spatial_dims: int, side: int, batch_size: int, options: dict, iterations: int = 5, warmup: int = 2
) -> float:
    """Training images per second of ``network`` on a ``batch_size`` x 1 x side^dims random batch (CPU)."""
    torch.manual_seed(0)
    model = build_network(network, spatial_dims, 1, 2, **options).train()
    optimizer = torch.optim.Adam(model.parameters())
    images = torch.randn(batch_size, 1, *([side] * spatial_dims))
    labels = torch.randint(0, 2, (batch_size,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return batch_size * iterations / (time.perf_counter() - start)


def measure(names: Sequence[str], iterations: int) -> pd.DataFrame:
    """One row per case: its settings, images per second and the ratio to the first case."""
    rows = []
    for name in names:
        network, dims, side, batch, options = CASES[name]
        speed = images_per_second(network, dims, side, batch, options, iterations)
        rows.append({"case": name, "network": network, "spatial_dims": dims, "side": side, "batch_size": batch,
                     "options": str(options), "images_per_s": round(speed, 1)})  # fmt: skip
        print(f"{name}: {speed:.1f} images/s", flush=True)
    table = pd.DataFrame(rows)
    table["ratio_to_first"] = (table["images_per_s"] / table["images_per_s"].iloc[0]).round(3)
    table["threads"] = torch.get_num_threads()
    table["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_networks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="cases to measure (default: all)")
    parser.add_argument("--iterations", type=int, default=5, help="timed training steps per case")
    parser.add_argument("--out", help="CSV to write the table to")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    table = measure(args.only or list(CASES), args.iterations)
    print(table.to_string(index=False))
    if args.out:
        write_csv(table, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
