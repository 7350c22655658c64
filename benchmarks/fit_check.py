"""Can a network fit a few hundred training images at all? A short training-loss check of network
variants, before a full run (issue 26: AlexNet's reference stayed at chance).

Each variant trains from seed 0 for ``--steps`` steps of ``--batch`` images drawn (seeded) from
``--images`` training images of a trained run's data, with its preprocessing (no artifact, as the
reference sees them; the run's weights are not used), Adam at the variant's learning rate, one
torch thread. It prints the mean training loss of each block of 20 steps: a network that cannot
learn the task stays at ln 2 = 0.693.

    python -m benchmarks.fit_check --model runs/architecture_probes/alexnet_kaiming_reference/localized2d/reference
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.audit.data import load_images
from pipeline.audit.model import load_audit_model
from pipeline.networks import AlexNet, build_network

STEM = dict(stem_kernel_size=5, stem_stride=2, stem_padding=2)
VARIANTS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    "small_cnn 1e-3": (lambda: build_network("small_cnn", 2, 1, 2), 1e-3),
    "alexnet 1e-4": (lambda: AlexNet(**STEM), 1e-4),
    "alexnet global pool, no dropout 1e-4": (lambda: AlexNet(**STEM, pool_size=1, dropout=0.0), 1e-4),
    "alexnet batch norm, global pool 1e-4": (lambda: AlexNet(**STEM, pool_size=1, norm="batch"), 1e-4),
}
BLOCK = 20


def losses(make: Callable[[], nn.Module], lr: float, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> list[float]:
    """The training loss of each step of one variant (seed 0)."""
    torch.manual_seed(0)
    network = make().train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    out = []
    for _ in range(steps):
        pick = torch.randint(0, len(x), (batch,))
        loss = nn.functional.cross_entropy(network(x[pick]), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained method folder: its data and preprocessing")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--images", type=int, default=512, help="training images (seeded sub-sample)")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_audit_model(None, model_dir=args.model)
    data = load_images(model, model.datalist, role="train", max_images=args.images, progress=False)
    x, y = data.images, torch.as_tensor(data.labels)
    print(f"{len(y)} training images of {model.datalist}, {args.steps} steps of {args.batch}, 1 thread, seed 0")
    for name in args.variants:
        make, lr = VARIANTS[name]
        started = time.monotonic()
        trace = losses(make, lr, x, y, args.steps, args.batch)
        blocks = [round(float(np.mean(trace[k : k + BLOCK])), 3) for k in range(0, len(trace), BLOCK)]
        print(f"{name}: loss per {BLOCK} steps {blocks} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
