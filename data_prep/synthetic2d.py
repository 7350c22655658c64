"""Generate the embedded 2D classification set (thorax or dermoscopy flavour) and its datalist.

Each sample is drawn from its own random generator seeded by (seed, index), so a sample does
not depend on the others, on the number of workers or on the order of generation. Labels are a
seeded permutation with an exact share of positives. Optional ``test_ood`` samples come from the
same generator with a shifted domain (noise, contrast, pose/colour variation).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from data_prep.datalist_build import build_datalist
from data_prep.datalist_io import DATALIST_NAME, SUMMARY_NAME, format_summary
from data_prep.dermoscopy import DermoscopyDomain, draw_dermoscopy
from data_prep.output_staging import staged_output
from data_prep.splits import SplitSpec
from data_prep.thorax import ThoraxDomain, draw_thorax

GENERATOR_VERSION = 1
FORMATS = {"png": ".png", "png16": ".png", "nifti": ".nii.gz"}
STORED_RANGE = {"png": [0, 255], "png16": [0, 65535], "nifti": [0.0, 1.0]}
FLAVOURS: dict[str, tuple[type, Callable, int]] = {
    "thorax": (ThoraxDomain, draw_thorax, 1),
    "dermoscopy": (DermoscopyDomain, draw_dermoscopy, 3),
}
# Default OOD shift: multiplicative for these fields, per flavour. Thorax: another site with 25%
# more pixel noise, 8% less contrast and 50% more positioning variation. The earlier shift
# (contrast x0.75, noise x1.5, pose x2) lifted the dark lung fields by more than the finding's
# amplitude, so every image looked positive to the bias-free reference (AUC 0.500); measured with
# benchmarks/scenario_validity.py (docs/data.md, "The OOD site").
OOD_SHIFT = {
    "thorax": {"noise_std": 1.25, "contrast": 0.92, "pose_jitter": 1.5},
    "dermoscopy": {"noise_std": 2.0, "contrast": 0.8, "hair": 2.0},
}


def make_domain(flavour: str, params: Mapping | None = None):
    """The domain dataclass of ``flavour`` with ``params`` overriding its defaults.

    Raises:
        ValueError: unknown flavour or parameter name, or a bad parameter value.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {sorted(FLAVOURS)}, got {flavour!r}")
    domain_class = FLAVOURS[flavour][0]
    allowed = [f.name for f in dataclasses.fields(domain_class)]
    unknown = sorted(set(params or {}) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {flavour} parameter(s) {unknown}; allowed: {allowed}")
    values = {}
    for key, value in (params or {}).items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{flavour} parameter {key!r} must be a number, got {value!r}") from None
    return domain_class(**values)


def default_ood_domain(flavour: str, domain):
    """``domain`` with the flavour's default OOD shift applied (see ``OOD_SHIFT``)."""
    return dataclasses.replace(domain, **{k: getattr(domain, k) * f for k, f in OOD_SHIFT[flavour].items()})


def write_image(array: np.ndarray, path: Path, image_format: str) -> None:
    """Write a float image in [0, 1] as 8-bit PNG, 16-bit PNG (grayscale only) or NIfTI (float32).

    Raises:
        ValueError: unknown ``image_format``, or 16-bit PNG asked for an RGB image.
    """
    if image_format == "png":
        Image.fromarray(np.round(array * 255).astype(np.uint8)).save(path)
    elif image_format == "png16":
        if array.ndim != 2:
            raise ValueError("image_format 'png16' supports grayscale images only; use 'png' or 'nifti' for RGB")
        Image.fromarray(np.round(array * 65535).astype(np.uint16)).save(path)
    elif image_format == "nifti":
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), path)
    else:
        raise ValueError(f"image_format must be one of {sorted(FORMATS)}, got {image_format!r}")


def _draw_and_write(task: tuple, flavour: str, size: int, seed: int, image_format: str, folder: Path) -> None:
    index, label, domain = task
    draw = FLAVOURS[flavour][1]
    array = draw(np.random.default_rng([seed, index]), size, bool(label), domain)
    write_image(array, folder / f"{flavour}_{index:06d}{FORMATS[image_format]}", image_format)


def _balanced_labels(n: int, positive_fraction: float, rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros(n, dtype=int)
    labels[: int(round(n * positive_fraction))] = 1
    return labels[rng.permutation(n)]


def generate(
    out_dir: str | Path,
    n: int = 5000,
    size: int = 64,
    flavour: str = "thorax",
    seed: int = 0,
    image_format: str = "png",
    positive_fraction: float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    teacher_size: float | int = 0.1,
    teacher_disjoint: bool = True,
    ood_size: int = 0,
    ood_params: Mapping | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
    **domain_params,
) -> Path:
    """Generate ``n`` images (+ ``ood_size`` OOD ones) under ``out_dir/images`` and the datalist.

    Args:
        out_dir: output folder (``datalist.json``, ``datalist_summary.csv``, ``images/``).
        n: number of in-distribution images, split into train/teacher/validation/test.
        size: image side in pixels.
        flavour: ``thorax`` (grayscale, positive = faint opacity) or ``dermoscopy`` (RGB,
            positive = malignant-looking lesion).
        seed: seed of labels, splits and every sample.
        image_format: ``png`` (8-bit), ``png16`` (16-bit, thorax only) or ``nifti`` (float32).
        positive_fraction: share of positives.
        val_fraction, test_fraction, teacher_size, teacher_disjoint: see :class:`SplitSpec`.
        ood_size: number of ``test_ood`` images from the shifted domain (0: no such role).
        ood_params: parameters of the OOD domain (default: the flavour's ``OOD_SHIFT`` applied
            to the main domain).
        workers: processes drawing images (1: no multiprocessing); output does not depend on it.
        overwrite: replace existing outputs in ``out_dir``.
        progress: show progress bars.
        verbose: print the summary.
        **domain_params: fields of :class:`ThoraxDomain` or :class:`DermoscopyDomain`, e.g.
            ``opacity_amplitude=0.06, noise_std=0.08``.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: a bad parameter (named in the message).
        FileExistsError: outputs exist and ``overwrite`` is False.
    """
    domain = make_domain(flavour, domain_params)
    if image_format not in FORMATS:
        raise ValueError(f"image_format must be one of {sorted(FORMATS)}, got {image_format!r}")
    if image_format == "png16" and FLAVOURS[flavour][2] != 1:
        raise ValueError(f"image_format 'png16' is for grayscale flavours; {flavour!r} is RGB (use 'png' or 'nifti')")
    for name, value, low in (("n", n, 2), ("size", size, 16), ("ood_size", ood_size, 0), ("workers", workers, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must lie in (0, 1), got {positive_fraction!r}")
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    spec.targets(n)
    ood_domain = make_domain(flavour, ood_params) if ood_params is not None else default_ood_domain(flavour, domain)

    label_rng = np.random.default_rng([seed, 2**31])
    labels = np.concatenate([_balanced_labels(n, positive_fraction, label_rng),
                             _balanced_labels(ood_size, positive_fraction, label_rng)])
    tasks = [(i, int(labels[i]), domain if i < n else ood_domain) for i in range(n + ood_size)]
    suffix = FORMATS[image_format]
    with staged_output(out_dir, overwrite) as staging:
        folder = staging / "images"
        folder.mkdir()
        work = partial(_draw_and_write, flavour=flavour, size=size, seed=seed, image_format=image_format, folder=folder)
        bar = partial(tqdm, total=len(tasks), desc=f"generating {flavour}", unit="image", disable=not progress)
        if workers == 1:
            for task in bar(tasks):
                work(task)
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in bar(pool.imap_unordered(work, tasks, chunksize=16)):
                    pass
        table = pd.DataFrame({
            "image": [folder / f"{flavour}_{i:06d}{suffix}" for i in range(n + ood_size)],
            "label": labels,
            "id": [f"{flavour}_{i:06d}" for i in range(n + ood_size)],
            "role": [None] * n + ["test_ood"] * ood_size,
        })
        metadata = {
            "source": "synthetic2d",
            "generator_version": GENERATOR_VERSION,
            "flavour": flavour,
            "parameters": {
                "n": n, "size": size, "image_format": image_format, "positive_fraction": positive_fraction,
                "domain": dataclasses.asdict(domain),
                "ood_size": ood_size, "ood_domain": dataclasses.asdict(ood_domain) if ood_size else None,
            },
            "seed": seed,
            "image_size": [size, size],
            "spatial_dims": 2,
            "channels": FLAVOURS[flavour][2],
            "stored_intensity_range": STORED_RANGE[image_format],
            "labels": {"0": "normal" if flavour == "thorax" else "benign",
                       "1": "opacity" if flavour == "thorax" else "malignant"},
        }
        build_datalist(table, staging, spec, metadata, overwrite=True, progress=progress, verbose=False)
    datalist = Path(out_dir) / DATALIST_NAME
    if verbose:
        print(f"datalist: {datalist}")
        print(format_summary(pd.read_csv(Path(out_dir) / SUMMARY_NAME, dtype={"label": str})))
    return datalist
