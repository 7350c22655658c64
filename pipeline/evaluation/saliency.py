"""Saliency maps (Grad-CAM, occlusion sensitivity) for 2D images and 3D volumes, and a comparison grid.

The bundles run :func:`write_saliency` as the ``saliency`` workflow
(``bundles/common/configs/saliency.yaml``: a few bias-inverted test images), writing
``<output_dir>/saliency/saliency.npz``; the experiment's report draws the models side by side
from those files (:func:`saliency_grid_from_files`).

Thin wrappers around :class:`monai.visualize.GradCAM` and
:class:`monai.visualize.OcclusionSensitivity` that (a) never touch the caller's model (MONAI
registers permanent hooks, so a copy is wrapped, with in-place activations switched off),
(b) return maps where larger means more important for ``class_idx`` (MONAI's default CAM
normaliser maps the maximum to 0), and (c) apply softmax over the model's outputs for occlusion
(MONAI's ``activate=True`` picks sigmoid/softmax from the *input* channel count).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.visualize import GradCAM, OcclusionSensitivity
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.evaluation.figures import save_figure

SALIENCY_METHODS = ("gradcam", "occlusion")
SALIENCY_FILE = "saliency.npz"
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def default_target_layer(model: nn.Module) -> str:
    """Name of the model's last convolution module (the usual Grad-CAM layer).

    Raises:
        ValueError: the model has no ``Conv1d``/``Conv2d``/``Conv3d`` module.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, _CONV_TYPES)]
    if not names:
        raise ValueError("target_layer must be given: the model has no convolution module to default to")
    return names[-1]


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch to [0, 1] (max -> 1); a constant map becomes 0."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def _softmax_or_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1) if logits.shape[1] > 1 else logits.sigmoid()


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    target_layer: str | None = None,
    class_idx: int = 1,
    occlusion_kwargs: Mapping | None = None,
) -> torch.Tensor:
    """Per-image saliency for class ``class_idx``, at the input resolution.

    Args:
        model: classifier returning logits of shape (batch, classes); left unchanged (a copy is hooked).
        images: batch of shape (B, C, H, W) or (B, C, H, W, D).
        method: ``"gradcam"`` (Grad-CAM at ``target_layer``, each map scaled to [0, 1]) or
            ``"occlusion"`` (drop of the class probability when a patch around each voxel is
            occluded; positive = the region supports the class).
        target_layer: module name as in ``model.named_modules()``, for Grad-CAM; default: the last
            convolution.
        class_idx: class whose evidence is shown.
        occlusion_kwargs: extra arguments of ``monai.visualize.OcclusionSensitivity`` (``mask_size``,
            ``n_batch``, ``overlap``, ``mode``); ``mask_size`` defaults to an eighth of the smallest
            spatial side; ``activate`` is always softmax over the outputs (sigmoid for one output).

    Returns:
        Tensor of shape (B, 1, *spatial) on the device of ``images`` (full volumes for 3D).

    Raises:
        ValueError: unknown ``method``, ``images`` not 4D/5D, unknown ``target_layer``, or
            ``class_idx`` outside the model's outputs.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method must be one of {SALIENCY_METHODS}, got {method!r}")
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (B, C, H, W) or (B, C, H, W, D), got {shape}")
    if class_idx < 0:
        raise ValueError(f"class_idx must be a non-negative class index, got {class_idx}")
    # MONAI's hooks stay registered: work on a copy, where in-place activations can also be switched
    # off (an in-place op on the hooked layer's output breaks the full backward hook).
    hooked = copy.deepcopy(model)
    for module in hooked.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    if method == "gradcam":
        return _gradcam(hooked, images, target_layer, class_idx)
    return _occlusion(hooked, images, class_idx, dict(occlusion_kwargs or {}))


def _gradcam(model: nn.Module, images: torch.Tensor, target_layer: str | None, class_idx: int) -> torch.Tensor:
    layer = default_target_layer(model) if target_layer is None else target_layer
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        raise ValueError(f"target_layer {layer!r} is not a module of the model; available: {names[:20]}")
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_unit_range)
    # An input that requires grad lets gradients reach the layer even for a frozen teacher.
    x = images.detach().clone().requires_grad_(True)
    try:
        maps = cam(x, class_idx=class_idx)
    except IndexError as err:
        raise ValueError(f"class_idx {class_idx} is outside the model's outputs: {err}") from err
    return maps.detach()


def _occlusion(model: nn.Module, images: torch.Tensor, class_idx: int, options: dict) -> torch.Tensor:
    options.setdefault("mask_size", max(1, min(images.shape[2:]) // 8))
    options.setdefault("verbose", False)
    options["activate"] = _softmax_or_sigmoid
    occlusion = OcclusionSensitivity(nn_module=model, **options)
    maps = []
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with lists inside OcclusionSensitivity; torch deprecates that (tests pin the result).
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        for image in images.detach():
            x = image[None]
            baseline = _softmax_or_sigmoid(model(x))
            if class_idx >= baseline.shape[1]:
                raise ValueError(f"class_idx must be below the model's {baseline.shape[1]} outputs, got {class_idx}")
            occluded, _ = occlusion(x)
            maps.append(baseline[:, class_idx].reshape(1, *[1] * (x.ndim - 2)) - occluded[:, class_idx])
    return torch.stack(maps).as_subclass(torch.Tensor).to(images.device)


def _display_slice(volume: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(C, *spatial) -> 2D array or (H, W, 3) RGB, taking the middle slice of the last axis in 3D."""
    if spatial_dims == 3:
        volume = volume[..., volume.shape[-1] // 2]
    if volume.shape[0] == 3:
        rgb = np.moveaxis(volume, 0, -1)
        low, high = rgb.min(), rgb.max()
        return (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    return volume[0]


def saliency_grid(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    out_png: str | Path,
    target_layers: Mapping[str, str] | None = None,
    spatial_dims: int = 2,
    method: str = "gradcam",
    class_idx: int = 1,
) -> Path:
    """Draw one row per image: the image, then its saliency overlay for each model.

    3D volumes show the middle slice along the last spatial axis (axial for RAS-oriented volumes
    as loaded by MONAI).

    Args:
        models: display name -> model.
        images: (B, C, *spatial) batch; 3-channel images are shown in colour, otherwise channel 0.
        out_png: PNG path, written to a temporary name then renamed.
        target_layers: display name -> Grad-CAM layer; a model without an entry uses its last convolution.
        spatial_dims: 2 or 3, must match ``images``.
        method: ``"gradcam"`` or ``"occlusion"`` (see :func:`saliency_maps`).
        class_idx: class whose evidence is shown.

    Returns:
        The written path.

    Raises:
        ValueError: no models, ``spatial_dims`` not 2/3 or not matching ``images``, or a
            ``target_layers`` key that names no model.
    """
    if not models:
        raise ValueError("models must name at least one model, got an empty mapping")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not isinstance(images, torch.Tensor) or images.ndim != spatial_dims + 2:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, C, *spatial) with {spatial_dims} spatial dims, got {shape}")
    target_layers = dict(target_layers or {})
    unknown = sorted(set(target_layers) - set(models))
    if unknown:
        raise ValueError(f"target_layers names {unknown}, which are not in models {sorted(models)}")
    maps = {
        name: saliency_maps(model, images, method=method, target_layer=target_layers.get(name), class_idx=class_idx)
        for name, model in models.items()
    }
    return draw_saliency_grid(images, maps, out_png, spatial_dims)


def draw_saliency_grid(
    images: torch.Tensor, maps: Mapping[str, torch.Tensor], out_png: str | Path, spatial_dims: int = 2
) -> Path:
    """One row per image: the image, then each model's map (B, 1, *spatial) over it; returns ``out_png``."""
    n_rows, n_cols = images.shape[0], 1 + len(maps)
    fig = Figure(figsize=(2.2 * n_cols, 2.2 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    pictures = images.detach().cpu().float().numpy()
    for row in range(n_rows):
        picture = _display_slice(pictures[row], spatial_dims)
        axes[row, 0].imshow(picture, cmap=None if picture.ndim == 3 else "gray")
        axes[row, 0].set_title("image" if row == 0 else "", fontsize=8)
        for col, (name, saliency) in enumerate(maps.items(), start=1):
            overlay = _display_slice(_unit_range(saliency[row : row + 1]).cpu().numpy()[0], spatial_dims)
            axes[row, col].imshow(picture, cmap=None if picture.ndim == 3 else "gray")
            axes[row, col].imshow(overlay, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            axes[row, col].set_title(name if row == 0 else "", fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    return save_figure(fig, out_png)


def write_saliency(
    model: nn.Module,
    loader: Iterable,
    out_dir: str | Path,
    method: str = "gradcam",
    target_layer: str | None = None,
    class_idx: int = 1,
    image_key: str = "image",
    id_key: str = "id",
    skip_empty: bool = False,
) -> Path | None:
    """Saliency maps of ``model`` on every image of ``loader`` (dict batches), saved with the images.

    Writes ``out_dir/saliency.npz`` (atomically): ``images`` (N, C, *spatial), ``maps``
    (N, 1, *spatial), ``ids`` (N,) and ``method``; returns its path. With ``skip_empty``, an
    empty loader (pre-biased data without the images asked for) writes nothing, warns and returns None.

    Raises:
        ValueError: for an empty loader (without ``skip_empty``), or as :func:`saliency_maps`.
    """
    images, maps, ids = [], [], []
    device = next(iter(model.parameters()), torch.empty(0)).device
    for batch in loader:
        batch_images = torch.as_tensor(batch[image_key]).as_subclass(torch.Tensor).to(device)
        maps.append(saliency_maps(model, batch_images, method=method, target_layer=target_layer, class_idx=class_idx).cpu())
        images.append(batch_images.detach().cpu())
        ids.extend(str(i) for i in batch.get(id_key, [""] * batch_images.shape[0]))
    if not images and skip_empty:
        warnings.warn(f"no images to draw saliency maps for: nothing written to {out_dir}", stacklevel=2)
        return None
    if not images:
        raise ValueError("loader yielded no images to draw saliency maps for")
    path = Path(out_dir) / SALIENCY_FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, images=torch.cat(images).float().numpy(), maps=torch.cat(maps).float().numpy(),
                 ids=np.asarray(ids), method=np.asarray(method))  # fmt: skip
    return path


def read_saliency(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, maps) that :func:`write_saliency` saved into ``folder``.

    Raises:
        ValueError: when ``folder`` holds no saliency file.
    """
    path = Path(folder) / SALIENCY_FILE
    if not path.is_file():
        raise ValueError(f"no saliency maps at {path}; run the bundle's saliency workflow first")
    with np.load(path) as saved:
        return torch.from_numpy(saved["images"]), torch.from_numpy(saved["maps"])


def saliency_grid_from_files(folders: Mapping[str, str | Path], out_png: str | Path) -> Path | None:
    """The grid of :func:`draw_saliency_grid` from saved maps, one column per name of ``folders``.

    The images come from the first folder that holds maps (every model's file holds the same
    images); a folder without maps is left out. Returns ``out_png``, or None when none holds maps.
    """
    saved = {name: read_saliency(f) for name, f in folders.items() if (Path(f) / SALIENCY_FILE).is_file()}
    if not saved:
        return None
    images = next(iter(saved.values()))[0]
    return draw_saliency_grid(images, {name: maps for name, (_, maps) in saved.items()}, out_png, images.ndim - 2)
