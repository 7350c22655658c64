"""Time the generation of the embedded default datasets (not a test; prints the figures).

Defaults: the 2D set (5,000 thorax images of 64x64, PNG) and the 3D set (600 SimBA-like volumes
of 64^3, NIfTI). ``--scale 0.2`` generates a fifth of each and extrapolates linearly (the 3D
template preparation is timed once and not scaled). ``--workers 1 2`` compares process counts.

    python benchmarks/bench_data_prep.py --scale 0.2 --workers 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data_prep import simba3d, synthetic2d


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def bench(name: str, generate, full_n: int, scale: float, workers: int, **kwargs) -> dict:
    """Generate ``full_n * scale`` items once and extrapolate time and disk use to ``full_n``."""
    n = max(10, round(full_n * scale))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate(Path(folder) / "out", n=n, workers=workers, progress=False, verbose=False, **kwargs)
        seconds = time.perf_counter() - start
        megabytes = _folder_mb(Path(folder))
    factor = full_n / n
    return {
        "set": name,
        "workers": workers,
        "n": n,
        "seconds": seconds,
        "ms_per_item": 1000 * seconds / n,
        "full_n": full_n,
        "full_seconds": seconds * factor,
        "full_mb": megabytes * factor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default sizes to generate")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="process counts to compare")
    parser.add_argument("--only", choices=("2d", "3d"), help="run one set only")
    args = parser.parse_args()

    rows = []
    if args.only != "3d":
        for workers in args.workers:
            rows.append(
                bench("synthetic2d thorax 64^2 png", synthetic2d.generate, 5000, args.scale, workers, size=64)
            )
    if args.only != "2d":
        start = time.perf_counter()
        simba3d.template(64)
        print(
            f"simba3d template preparation (nilearn import, smoothing, resampling): "
            f"{time.perf_counter() - start:.1f} s (once per process)"
        )
        for workers in args.workers:
            rows.append(bench("simba3d 64^3 nii.gz", simba3d.generate, 600, args.scale, workers, size=64))
    print(
        f"{'set':30s} {'workers':>7s} {'n':>6s} {'s':>8s} {'ms/item':>8s} {'full n':>7s} {'full s':>8s} {'full MB':>8s}"
    )
    for r in rows:
        print(
            f"{r['set']:30s} {r['workers']:7d} {r['n']:6d} {r['seconds']:8.1f} {r['ms_per_item']:8.1f} "
            f"{r['full_n']:7d} {r['full_seconds']:8.1f} {r['full_mb']:8.1f}"
        )


if __name__ == "__main__":
    main()
