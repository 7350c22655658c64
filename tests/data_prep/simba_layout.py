"""A tiny dataset laid out as SimBA publishes one: volumes in one folder, split CSVs in another.

SimBA's CSVs (pandas index first, then ``isv_dst,effect_dst,isv_bin,effect_bin,both_bins,
bias_label,class_label,strat_col,filepath,filename``) hold absolute ``filepath``s of the
machine that generated the data, which do not exist here.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

AUTHOR_ROOT = "/home/simba-author/experiments/far_bias/data"
COLUMNS = ["isv_dst", "effect_dst", "isv_bin", "effect_bin", "both_bins", "bias_label", "class_label",
           "strat_col", "filepath", "filename"]  # fmt: skip


def write_volume(path: Path, label: int, bias: int, index: int, size: int = 8) -> None:
    """An 8^3 volume whose class shows as a bright centre block and whose bias as a bright corner."""
    rng = np.random.default_rng(index)
    volume = rng.normal(0.2, 0.05, (size,) * 3).astype(np.float32)
    if label:
        volume[3:5, 3:5, 3:5] += 0.6
    if bias:
        volume[:2, :2, :2] += 0.8
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)


def write_split(
    root: Path, split: str, rows: list[tuple[int, int]], first: int = 0, no_bias: int = 0
) -> Path:
    """Volumes of ``rows`` (class_label, bias_label) into ``root/data`` and their CSV ``root/splits/<split>.csv``.

    ``no_bias``: the bias code of bias-free volumes (0 single-bias, 3 multi-bias); the volume
    carries the bias effect when its code differs.
    """
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    records = []
    for offset, (label, code) in enumerate(rows):
        index = first + offset
        name = f"sub-{index:04d}_{split}.nii.gz"
        write_volume(root / "data" / name, label, int(code != no_bias), index)
        isv, effect = float(np.sin(index)), float(np.cos(index))
        records.append([isv, effect, int(isv > 0), int(effect > 0), f"{int(isv > 0)}_{int(effect > 0)}", code,
                        label, f"{label}_{code}", f"{AUTHOR_ROOT}/{name}", name])  # fmt: skip
    path = root / "splits" / f"{split}.csv"
    pd.DataFrame(records, columns=COLUMNS).to_csv(path)  # the unnamed pandas index comes first, as in SimBA
    return path


def biased_rows(
    n: int, bias_rate_neg: float = 0.2, bias_rate_pos: float = 0.8, bias_code: int = 1, no_bias: int = 0
) -> list[tuple[int, int]]:
    """``n`` rows, half of each class, with the bias on the given share of each class (exact counts)."""
    rows = []
    for label, rate in ((0, bias_rate_neg), (1, bias_rate_pos)):
        count = n // 2
        biased = round(count * rate)
        rows += [(label, bias_code)] * biased + [(label, no_bias)] * (count - biased)
    return rows


def write_dataset(root: Path, sizes=(40, 12, 20), **rates) -> dict[str, Path]:
    """train/val/test CSVs of a single-bias SimBA dataset (bias on 80% of positives, 20% of negatives)."""
    paths, first = {}, 0
    for split, n in zip(("train", "val", "test"), sizes):
        paths[split] = write_split(root, split, biased_rows(n, **rates), first=first)
        first += n
    return paths


def write_published(root: Path, experiment: str, splits: dict[str, list[tuple[int, int]]], no_bias: int = 0) -> Path:
    """A dataset in the layout SimBA's generate_data.py writes (estanley16/SimBA): volumes in
    ``root/datasets/<experiment>/<split>/`` numbered from 00000 in every split and named after
    their effects (``_B`` when biased), CSVs at ``root/<experiment>/<split>.csv`` with the unnamed
    pandas index and the generating machine's absolute ``filepath``; returns ``root``."""
    for split, rows in splits.items():
        folder = root / "datasets" / experiment / split
        folder.mkdir(parents=True, exist_ok=True)
        (root / experiment).mkdir(parents=True, exist_ok=True)
        records = []
        for n, (label, code) in enumerate(rows):
            effect = round(float(np.cos(n)), 3)
            name = f"{n:05d}_0.0_S_{effect}_D" + ("_2.0_B" if code != no_bias else "") + ".nii.gz"
            seed = 1000 * list(splits).index(split) + n  # the same volumes in every process
            write_volume(folder / name, label, int(code != no_bias), seed)
            records.append([0.0, effect, 0, int(effect > 0), f"0_{int(effect > 0)}", code, label, f"{label}_{code}",
                            f"/home/emma/Documents/SBB/datasets/{experiment}/{split}/{name}", name])  # fmt: skip
        pd.DataFrame(records, columns=COLUMNS).to_csv(root / experiment / f"{split}.csv")
    return root
