"""The ``prebiased3d`` scenario measured: a SimBA-layout dataset whose bias is in the volumes.

SimBA as published writes its bias effect into the volumes; the project reads such a dataset with
``python -m data_prep simba`` and trains on it with ``artifact: null`` (docs/data.md, "Pre-biased
data"). No published SimBA dataset is available offline, so this script writes one the way SimBA's
``generate_data.py`` lays it out (``ROOT/datasets/EXP/{train,val,test}/*.nii.gz`` and
``ROOT/EXP/{train,val,test}.csv``), from the project's SimBA-like generator, with SimBA's
morphological bias baked in: the ``localized3d`` scenario's local deformation, in a region away
from the disease region. Then it reads the dataset with ``data_prep simba`` (the teacher drawn
from bias-free training volumes, as by default), runs the experiment on it and writes one table
row per method.

- Bias: exactly ``round(rate * n_class)`` volumes of each class in each split carry it, chosen with
  the seed: 80% of the disease class and 20% of the healthy class (SimBA's layout in
  tests/data_prep/simba_layout.py). The injected scenarios' 95% / 5% would leave the bias-free
  and bias-inverted test groups about 8 positives each out of 300 volumes (there are no
  counterfactual pairs to score instead).
- Sizes: ``localized3d``'s (32^3 volumes; 480 training volumes of which 60 bias-free go to the
  teacher, 60 validation, 300 test). The source model's external set is written the same way,
  bias-free (another seed and the other site's noise level, as ``localized3d``'s source set).

    python -m benchmarks.prebiased_simba --output runs/prebiased_simba \\
        --table benchmarks/results/prebiased3d.csv --resume
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml

from data_prep.cli import main as data_prep_main
from data_prep.simba3d import generate
from pipeline.atomic import write_text
from pipeline.bundles import BUNDLES_ROOT
from pipeline.transforms.injection import ShortcutInjection

EXPERIMENT = "far_bias_deformation"
SPLITS = {"train": "train", "val": "validation", "test": "test"}  # SimBA split -> generator role
COLUMNS = ["isv_dst", "effect_dst", "isv_bin", "effect_bin", "both_bins", "bias_label", "class_label",
           "strat_col", "filepath", "filename"]  # fmt: skip
BIAS_RATES = (0.2, 0.8)  # healthy, disease
# localized3d's split: 480 training volumes (60 of them bias-free go to the teacher), 60 validation, 300 test
DATA = {"n": 840, "size": 32, "val_fraction": 60 / 840, "test_fraction": 300 / 840, "teacher_size": 0}
SOURCE_DATA = {"n": 600, "size": 32, "seed": 1, "noise_std": 0.045, "val_fraction": 0.1, "test_fraction": 0.0,
               "teacher_size": 0}  # fmt: skip
TEACHER_SIZE = 60
METHODS = ("source", "erm", "reference", "teacher", "distilled")
TABLE_COLUMNS = ["method", "in_distribution_auc", "bias_free_auc", "bias_inverted_auc", "delta_tpr",
                 "n_bias_free", "n_bias_inverted", "seconds", "threads", "machine", "seed"]  # fmt: skip


def bias_flags(labels: Sequence[int], rates: Sequence[float], seed: int, split: str) -> np.ndarray:
    """0/1 per volume: exactly ``round(rate * count)`` of each class carry the bias, chosen with the seed."""
    labels = np.asarray(labels)
    flags = np.zeros(len(labels), dtype=int)
    for c, rate in enumerate(rates):
        members = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, list(SPLITS).index(split), c])
        flags[rng.permutation(members)[: int(round(rate * len(members)))]] = 1
    return flags


def write_published(generated: Path, root: Path, experiment: str, rates: Sequence[float], seed: int) -> Path:
    """Copy a generated simba3d set into SimBA's published layout, baking the bias into the flagged volumes.

    Returns ``root``; the CSVs carry ``bias_label`` (1: biased) and ``class_label``.
    """
    datalist = json.loads((generated / "datalist.json").read_text())
    scenario = BUNDLES_ROOT / "common" / "configs" / "scenarios" / "localized3d.yaml"
    artifact = yaml.safe_load(scenario.read_text())["artifact"]
    injection = ShortcutInjection(artifact, rates=rates, seed=seed)
    for split, role in SPLITS.items():
        items = datalist.get(role, [])
        if not items:
            continue
        folder = root / "datasets" / experiment / split
        folder.mkdir(parents=True, exist_ok=True)
        flags = bias_flags([item["label"] for item in items], rates, seed, split)
        records = []
        for n, (item, flag) in enumerate(zip(items, flags)):
            image = nib.load(generated / item["image"])
            volume = np.asarray(image.get_fdata(dtype=np.float32))
            if flag:
                volume = np.asarray(injection.add_artifact(torch.from_numpy(volume)[None], item["id"]))[0]
            effect = float(item.get("disease_coefficient", 0.0))
            name = f"{n:05d}_{item['id']}_D{effect:.3f}" + ("_B" if flag else "") + ".nii.gz"
            out = nib.Nifti1Image(volume.astype(np.float32), image.affine, image.header)
            out.set_data_dtype(np.int16)
            nib.save(out, folder / name)
            records.append([0.0, effect, 0, int(effect > 0), f"0_{int(effect > 0)}", int(flag), int(item["label"]),
                            f"{item['label']}_{int(flag)}", f"/generated/{experiment}/{split}/{name}", name])  # fmt: skip
        (root / experiment).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records, columns=COLUMNS).to_csv(root / experiment / f"{split}.csv")
    return root


def prepare(output: Path, seed: int = 0, progress: bool = True) -> tuple[Path, Path]:
    """The biased dataset and the bias-free source set, each read by ``data_prep simba``; returns their datalists."""
    datalists = []
    for name, params, rates, teacher in (("biased", DATA, BIAS_RATES, TEACHER_SIZE),
                                         ("source", SOURCE_DATA, (0.0, 0.0), 0)):  # fmt: skip
        datalist = output / name / "datalist" / "datalist.json"
        if not datalist.exists():
            params = {"seed": seed, **params}
            generated = output / name / "generated"
            shutil.rmtree(output / name, ignore_errors=True)
            generate(generated, progress=progress, verbose=False, **params)
            write_published(generated, output / name / "simba", EXPERIMENT, rates, params["seed"])
            shutil.rmtree(generated)
            code = data_prep_main(["simba", "--simba-root", str(output / name / "simba"), "--experiment", EXPERIMENT,
                                   "--teacher-size", str(teacher), "--seed", str(seed),
                                   "--out", str(datalist.parent)] + ([] if progress else ["--no-progress"]))  # fmt: skip
            if code != 0:
                raise RuntimeError(f"data_prep simba failed for {output / name / 'simba'} (exit {code})")
        datalists.append(datalist)
    return datalists[0], datalists[1]


def table_rows(report: Path, seconds: float, threads: int, seed: int) -> pd.DataFrame:
    """One row per method from the experiment's ``results.csv`` (prebiased3d)."""
    results = pd.read_csv(report / "results.csv")
    results = results[results["scenario"] == "prebiased3d"]
    rows = []
    for method, group in results.groupby("method", sort=False):
        by_set = group.set_index("test_set")
        rows.append({
            "method": method,
            **{f"{s}_auc": round(float(by_set.loc[s, "auc"]), 4) if s in by_set.index else math.nan
               for s in ("in_distribution", "bias_free", "bias_inverted")},
            # TPR of the biased test positives minus the bias-free ones: the only reliance measure without pairs
            "delta_tpr": round(float(by_set.loc["in_distribution", "delta_tpr"]), 4)
            if "in_distribution" in by_set.index else math.nan,
            "n_bias_free": int(by_set.loc["bias_free", "n"]) if "bias_free" in by_set.index else 0,
            "n_bias_inverted": int(by_set.loc["bias_inverted", "n"]) if "bias_inverted" in by_set.index else 0,
            "seconds": round(seconds), "threads": threads,
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "seed": seed,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prebiased_simba", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, default=Path("runs/prebiased_simba"))
    parser.add_argument("--table", type=Path, default=Path("benchmarks/results/prebiased3d.csv"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more experiment settings (YAML values), e.g. max_epochs=1 for a quick check")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    parser.add_argument("--rescore", action="store_true",
                        help="only rewrite the table from the finished experiment's report (keeps the table's seconds)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.rescore:
        if not args.table.is_file() or not (args.output / "experiment" / "report" / "results.csv").is_file():
            parser.error(f"--rescore rewrites {args.table} from {args.output / 'experiment' / 'report'}: "
                         "both must exist (run without --rescore first)")  # fmt: skip
        seconds = float(pd.read_csv(args.table)["seconds"].iloc[0])
        rows = table_rows(args.output / "experiment" / "report", seconds, args.threads, args.seed)
        write_text(rows.to_csv(index=False), args.table)
        print(rows.to_string(index=False))
        return 0
    datalist, source = prepare(args.output, args.seed, progress=not args.no_progress)
    command = [sys.executable, "-m", "pipeline.experiment", "--scenarios", "prebiased3d", "--methods", *args.methods,
               "--output", str(args.output / "experiment"),
               *[a for kv in [f"seed={args.seed}", f"num_threads={args.threads}", f"datalist={datalist}",
                              f"source_datalist={source}", *args.set] for a in ("--set", kv)]]  # fmt: skip
    if args.resume:
        command.append("--resume")
    print(" ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        print(f"the experiment failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    rows = table_rows(
        args.output / "experiment" / "report", time.perf_counter() - started, args.threads, args.seed
    )
    args.table.parent.mkdir(parents=True, exist_ok=True)
    write_text(rows.to_csv(index=False), args.table)
    print(rows.to_string(index=False))
    print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
