"""Generate a SimBA-like 3D set (NIfTI volumes with a proper affine) and its datalist.

Following SimBA (Stanley et al.), each volume is a template brain warped by
    subject effect: a sum of ``n_subject_modes`` smooth global displacement fields (fixed per
        dataset seed) with truncated N(0, 1) coefficients;
    disease effect: a local radial displacement around one region (positive = atrophy) whose
        coefficient is N(+1, 1) for the disease class and N(-1, 1) for the healthy class;
plus Gaussian intensity noise. The bias effect is not baked in: it comes from the artifact
transforms at training time. The template is nilearn's MNI152 T1 (1 mm), which ships inside the
nilearn package (``load_mni152_template`` reads a file of the package; nothing is downloaded).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from data_prep.datalist_build import build_datalist
from data_prep.datalist_io import DATALIST_NAME, SUMMARY_NAME, format_summary
from data_prep.output_staging import staged_output
from data_prep.splits import SplitSpec

GENERATOR_VERSION = 1
MNI_CODE = 4  # NIfTI xform code "MNI152"
# Region centres in MNI millimetres: the disease region, and a second region recorded for
# local-deformation bias artifacts (not used by the generator).
REGIONS_MM = {"left_medial_temporal": (-26.0, -20.0, -14.0), "right_frontal": (30.0, 40.0, 20.0)}
# What an acquisition site sets; another site (the ``test_ood`` role) differs in these only.
SITE_FIELDS = ("noise_std", "intensity_gain", "blur_sigma_mm")
# The default other site (values, not factors), measured with benchmarks/scenario_validity.py (docs/data.md)
# Another scanner: 50% more noise, 5% less gain, 3 mm coarser resolution. The bias-free reference
# keeps AUC 0.905 there (benchmarks/results/simba3d_ood_sites.csv).
DEFAULT_OOD_SITE = {"noise_std": 0.045, "intensity_gain": 0.95, "blur_sigma_mm": 3.0}


@dataclass(frozen=True)
class Simba3DEffects:
    """Magnitudes of the SimBA-like effects.

    Args:
        n_subject_modes: number of global smooth displacement modes (SimBA uses 10 PCA modes).
        subject_scale_mm: peak displacement of one subject mode at coefficient 1.
        coefficient_bound: subject coefficients are N(0, 1) truncated to +-this value.
        disease_region: key of ``REGIONS_MM`` where the disease deformation acts.
        disease_radius_mm: Gaussian radius of the disease deformation.
        disease_scale_mm: peak displacement of the disease mode at coefficient 1.
        disease_mean: class means of the disease coefficient are +-this value (SD 1).
        noise_std: standard deviation of the additive intensity noise (template in [0, 1]).
        intensity_gain: scanner gain: the warped template is multiplied by it (1 = unchanged).
        blur_sigma_mm: scanner resolution: Gaussian smoothing of the warped template (0 = none).
        The last three describe the acquisition site (:data:`SITE_FIELDS`); ``test_ood`` volumes
        are drawn with other values (``ood_site``).

    Raises:
        ValueError: a negative magnitude, no subject modes or an unknown region.
    """

    n_subject_modes: int = 10
    subject_scale_mm: float = 6.0
    coefficient_bound: float = 2.0
    disease_region: str = "left_medial_temporal"
    disease_radius_mm: float = 12.0
    disease_scale_mm: float = 4.0
    disease_mean: float = 1.0
    noise_std: float = 0.03
    intensity_gain: float = 1.0
    blur_sigma_mm: float = 0.0

    def __post_init__(self):
        if int(self.n_subject_modes) != self.n_subject_modes or self.n_subject_modes < 0:
            raise ValueError(f"n_subject_modes must be an integer >= 0, got {self.n_subject_modes!r}")
        object.__setattr__(self, "n_subject_modes", int(self.n_subject_modes))
        for name in ("subject_scale_mm", "disease_scale_mm", "disease_mean", "noise_std", "blur_sigma_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("coefficient_bound", "disease_radius_mm", "intensity_gain"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.disease_region not in REGIONS_MM:
            raise ValueError(f"disease_region must be one of {sorted(REGIONS_MM)}, got {self.disease_region!r}")


@functools.lru_cache(maxsize=4)
def template(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 template smoothed and resampled to a ``size``^3 isotropic grid.

    The grid covers the brain's bounding box (+6 %), so the voxel size is about 190 mm / size.

    Returns:
        (volume float32 in [0, 1], 4x4 affine in MNI millimetres), both read-only (cached).
    """
    from nilearn import datasets, image  # slow import; only needed here

    source = datasets.load_mni152_template(resolution=1)
    data = source.get_fdata()
    brain = np.argwhere(data > 0.02)
    low, high = brain.min(axis=0), brain.max(axis=0)
    voxel = (high - low + 1).max() * 1.06 / size
    centre = (source.affine @ np.r_[(low + high) / 2.0, 1.0])[:3]
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = centre - voxel * (size - 1) / 2.0
    smooth = image.smooth_img(source, fwhm=voxel)
    resampled = image.resample_img(
        smooth, target_affine=affine, target_shape=(size,) * 3, interpolation="continuous",
        force_resample=True, copy_header=True,
    )
    volume = np.clip(resampled.get_fdata(), 0.0, None)
    volume = (volume / volume.max()).astype(np.float32)
    for cached in (volume, affine):  # shared by every caller of this cache
        cached.setflags(write=False)
    return volume, affine


def region_voxel(affine: np.ndarray, region: str) -> np.ndarray:
    """Voxel coordinates of a ``REGIONS_MM`` centre in the grid of ``affine``."""
    return (np.linalg.inv(affine) @ np.r_[REGIONS_MM[region], 1.0])[:3]


def subject_modes(size: int, count: int, seed: int) -> np.ndarray:
    """``count`` smooth displacement fields (count, 3, size, size, size), each with peak norm 1 voxel.

    Each is white noise on a 4^3 control grid, upsampled by trilinear interpolation.
    """
    if count == 0:
        return np.zeros((0, 3, size, size, size), dtype=np.float32)
    rng = np.random.default_rng([seed, 2**32 - 1])
    coarse = rng.normal(size=(count, 3, 4, 4, 4))
    fields = ndimage.zoom(coarse, (1, 1, size / 4, size / 4, size / 4), order=1, grid_mode=False)
    peak = np.linalg.norm(fields, axis=1).max(axis=(1, 2, 3)).clip(min=1e-6)
    return (fields / peak[:, None, None, None, None]).astype(np.float32)


def disease_mode(size: int, centre: np.ndarray, radius_vox: float) -> np.ndarray:
    """Radial displacement (3, size, size, size) with a Gaussian envelope, peak norm 1 voxel.

    Sampling outward (positive coefficient) shrinks the region: atrophy.
    """
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))
    offset = grid - centre.astype(np.float32)[:, None, None, None]
    field = offset / radius_vox * np.exp(-(offset**2).sum(axis=0) / (2 * radius_vox**2))
    return (field / np.linalg.norm(field, axis=0).max()).astype(np.float32)


def ood_site_effects(effects: Simba3DEffects, ood_site: Mapping | None = None) -> Simba3DEffects:
    """``effects`` at another acquisition site: its :data:`SITE_FIELDS` replaced by ``ood_site``
    (None: :data:`DEFAULT_OOD_SITE`).

    Raises:
        ValueError: ``ood_site`` names a field that is not a site field, or a bad value.
    """
    site = DEFAULT_OOD_SITE if ood_site is None else dict(ood_site)
    unknown = sorted(set(site) - set(SITE_FIELDS))
    if unknown:
        raise ValueError(f"ood_site: unknown field(s) {unknown}; a site sets only {list(SITE_FIELDS)}")
    return dataclasses.replace(effects, **{k: float(v) for k, v in site.items()})


def _truncated_normal(rng: np.random.Generator, count: int, bound: float) -> np.ndarray:
    values = rng.normal(size=count)
    while np.any(np.abs(values) > bound):
        redraw = np.abs(values) > bound
        values[redraw] = rng.normal(size=int(redraw.sum()))
    return values


_WORKER: dict = {}


def _init_worker(state: dict) -> None:
    _WORKER.update(state)


def _draw_and_write(task: tuple[int, int, int]) -> tuple[int, float]:
    """Draw volume ``index`` with ``label`` at site ``site`` (0: training site, 1: the OOD site) and
    write it; return (index, disease coefficient)."""
    index, label, site = task
    state = _WORKER
    effects: Simba3DEffects = state["sites"][site]
    rng = np.random.default_rng([state["seed"], index])
    subject = _truncated_normal(rng, effects.n_subject_modes, effects.coefficient_bound)
    disease = rng.normal(effects.disease_mean if label else -effects.disease_mean, 1.0)
    ddf = np.tensordot(subject, state["subject_modes"], axes=1) * state["subject_scale_vox"]
    ddf = ddf + disease * state["disease_scale_vox"] * state["disease_mode"]
    coordinates = np.indices(ddf.shape[1:], dtype=np.float32) + ddf  # sample the template at x + ddf(x)
    volume = ndimage.map_coordinates(state["template"], coordinates, order=1, mode="constant", cval=0.0)
    if effects.blur_sigma_mm > 0:
        volume = ndimage.gaussian_filter(volume, effects.blur_sigma_mm / float(state["affine"][0, 0]))
    if effects.intensity_gain != 1.0:
        volume = volume * effects.intensity_gain
    volume = volume + rng.normal(0.0, effects.noise_std, size=volume.shape)
    image = nib.Nifti1Image(volume.astype(np.float32), state["affine"])
    image.set_qform(state["affine"], code=MNI_CODE)
    image.set_sform(state["affine"], code=MNI_CODE)
    image.set_data_dtype(np.int16)  # nibabel stores scl_slope/inter: ~3e-5 steps, half the size of float32
    nib.save(image, state["folder"] / f"simba3d_{index:05d}.nii.gz")
    return index, float(disease)


def generate(
    out_dir: str | Path,
    n: int = 600,
    size: int = 64,
    seed: int = 0,
    positive_fraction: float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    teacher_size: float | int = 0.1,
    teacher_disjoint: bool = True,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
    ood_size: int = 0,
    ood_site: Mapping | None = None,
    **effect_params,
) -> Path:
    """Generate ``n`` volumes of ``size``^3 under ``out_dir/images`` and the datalist.

    Args:
        out_dir: output folder (``datalist.json``, ``datalist_summary.csv``, ``images/``).
        n: number of volumes.
        size: side of the cubic grid in voxels.
        seed: seed of labels, modes, splits and every volume.
        positive_fraction: share of the disease class.
        val_fraction, test_fraction, teacher_size, teacher_disjoint: see :class:`SplitSpec`.
        workers: processes drawing volumes (1: no multiprocessing); output does not depend on it.
        overwrite: replace existing outputs in ``out_dir``.
        progress: show progress bars.
        verbose: print the summary.
        ood_size: number of ``test_ood`` volumes from another acquisition site (0: no such role).
        ood_site: that site's :data:`SITE_FIELDS` values (None: :data:`DEFAULT_OOD_SITE`).
        **effect_params: fields of :class:`Simba3DEffects`.

    Returns:
        path of the datalist JSON.

    Raises:
        ValueError: a bad parameter (named in the message).
        FileExistsError: outputs exist and ``overwrite`` is False.
    """
    allowed = [f.name for f in dataclasses.fields(Simba3DEffects)]
    unknown = sorted(set(effect_params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown simba3d parameter(s) {unknown}; allowed: {allowed}")
    effects = Simba3DEffects(**effect_params)
    ood_effects = ood_site_effects(effects, ood_site)
    for name, value, low in (("n", n, 2), ("size", size, 8), ("workers", workers, 1), ("ood_size", ood_size, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must lie in (0, 1), got {positive_fraction!r}")
    spec = SplitSpec(val_fraction, test_fraction, teacher_size, teacher_disjoint, seed)
    spec.targets(n)

    volume, affine = template(size)
    voxel_mm = float(affine[0, 0])
    centre = region_voxel(affine, effects.disease_region)
    labels = np.zeros(n, dtype=int)
    labels[: int(round(n * positive_fraction))] = 1
    labels = labels[np.random.default_rng([seed, 2**31]).permutation(n)]
    ood_labels = np.zeros(ood_size, dtype=int)
    ood_labels[: int(round(ood_size * positive_fraction))] = 1
    labels = np.r_[labels, ood_labels[np.random.default_rng([seed, 2**31 + 1]).permutation(ood_size)]]
    total = n + ood_size
    with staged_output(out_dir, overwrite) as staging:
        folder = staging / "images"
        folder.mkdir()
        state = {
            "sites": (effects, ood_effects), "seed": seed, "template": volume, "affine": affine, "folder": folder,
            "subject_modes": subject_modes(size, effects.n_subject_modes, seed),
            "subject_scale_vox": effects.subject_scale_mm / voxel_mm,
            "disease_mode": disease_mode(size, centre, effects.disease_radius_mm / voxel_mm),
            "disease_scale_vox": effects.disease_scale_mm / voxel_mm,
        }
        tasks = [(i, int(labels[i]), int(i >= n)) for i in range(total)]
        bar = partial(tqdm, total=total, desc="generating simba3d", unit="volume", disable=not progress)
        coefficients = np.zeros(total)
        if workers == 1:
            previous = dict(_WORKER)
            _WORKER.update(state)
            try:
                results = [_draw_and_write(task) for task in bar(tasks)]
            finally:
                _WORKER.clear()
                _WORKER.update(previous)
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
                results = list(bar(pool.imap_unordered(_draw_and_write, tasks, chunksize=4)))
        for index, coefficient in results:
            coefficients[index] = coefficient
        table = pd.DataFrame({
            "image": [folder / f"simba3d_{i:05d}.nii.gz" for i in range(total)],
            "label": labels,
            "id": [f"simba3d_{i:05d}" for i in range(total)],
            "disease_coefficient": np.round(coefficients, 6),
            "role": [None] * n + ["test_ood"] * ood_size,
        })
        metadata = {
            "source": "simba3d",
            "generator_version": GENERATOR_VERSION,
            "parameters": {"n": n, "size": size, "positive_fraction": positive_fraction,
                           "effects": dataclasses.asdict(effects), "ood_size": ood_size,
                           "ood_effects": dataclasses.asdict(ood_effects) if ood_size else None},
            "seed": seed,
            "image_size": [size] * 3,
            "voxel_size_mm": voxel_mm,
            "affine": affine.tolist(),
            "spatial_dims": 3,
            "channels": 1,
            "template": "nilearn MNI152 T1 (1 mm), smoothed and resampled",
            "regions_voxel": {name: region_voxel(affine, name).round(2).tolist() for name in REGIONS_MM},
            "labels": {"0": "healthy", "1": "disease"},
        }
        build_datalist(table, staging, spec, metadata, attributes=("disease_coefficient",),
                       overwrite=True, progress=progress, verbose=False)
    datalist = Path(out_dir) / DATALIST_NAME
    if verbose:
        print(f"datalist: {datalist}")
        print(format_summary(pd.read_csv(Path(out_dir) / SUMMARY_NAME, dtype={"label": str})))
    return datalist
