"""Generate an embedded default dataset once into a cache folder and reuse it afterwards.

Bundles call ``ensure_dataset("synthetic2d", n=..., size=...)`` so that a first run needs no
manual data step. The dataset is generated into a temporary folder next to its final place and
renamed when complete; when two processes race, the loser discards its copy and uses the winner's.
Temporary folders left by a killed run are removed by the next call (see ``pipeline.atomic``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

from data_prep import simba3d, synthetic2d
from data_prep.datalist_io import DATALIST_NAME
from pipeline.atomic import remove_stale_staging, staging_name

ENV_ROOT = "SHORTCUT_KD_DATA"
GENERATORS = {"synthetic2d": synthetic2d, "simba3d": simba3d}
# temporary folders of ensure_dataset in the cache root (removed when stale, e.g. after a kill)
STAGING_PATTERNS = tuple(f".{name}-*.{kind}-*" for name in GENERATORS for kind in ("tmp", "retired"))
SIGNATURES = {name: inspect.signature(module.generate) for name, module in GENERATORS.items()}
# Generator arguments that do not change the generated content, left out of the folder hash.
NOT_CONTENT = ("out_dir", "workers", "overwrite", "progress", "verbose")


def default_root() -> Path:
    """``$SHORTCUT_KD_DATA`` if set, else ``~/.cache/shortcut-kd``."""
    return Path(os.environ.get(ENV_ROOT) or Path.home() / ".cache" / "shortcut-kd")


def content_arguments(name: str, params: dict) -> dict:
    """Every argument that shapes the content of dataset ``name``, defaults filled in.

    The generator's keyword parameters are resolved into the full domain/effects dataclass, so
    a change of one of their defaults changes the folder too.

    Raises:
        ValueError: unknown parameters, bad values, or values that are not JSON-serialisable.
    """
    try:
        bound = SIGNATURES[name].bind("out", **params)
    except TypeError as err:
        raise ValueError(f"bad parameters for embedded dataset {name!r}: {err}") from None
    bound.apply_defaults()
    arguments = {k: v for k, v in bound.arguments.items() if k not in NOT_CONTENT}
    if name == "synthetic2d":
        domain = synthetic2d.make_domain(arguments["flavour"], arguments.pop("domain_params"))
        arguments["domain"] = dataclasses.asdict(domain)
        ood_params = arguments.pop("ood_params")
        if arguments["ood_size"]:
            ood_domain = (
                synthetic2d.make_domain(arguments["flavour"], ood_params)
                if ood_params is not None
                else synthetic2d.default_ood_domain(arguments["flavour"], domain)
            )
            arguments["ood_domain"] = dataclasses.asdict(ood_domain)
    else:
        unknown = sorted(set(arguments["effect_params"]) - {f.name for f in dataclasses.fields(simba3d.Simba3DEffects)})
        if unknown:
            raise ValueError(f"unknown simba3d parameter(s) {unknown}")
        effects = simba3d.Simba3DEffects(**arguments.pop("effect_params"))
        arguments["effects"] = dataclasses.asdict(effects)
        ood_site = arguments.pop("ood_site")
        if arguments["ood_size"]:
            arguments["ood_effects"] = dataclasses.asdict(simba3d.ood_site_effects(effects, ood_site))
    try:
        json.dumps(arguments)
    except TypeError as err:
        raise ValueError(f"parameters of embedded dataset {name!r} must be JSON-serialisable: {err}") from None
    return arguments


def dataset_folder(name: str, root: str | Path | None = None, **params) -> Path:
    """Cache folder ``<root>/<name>-<hash>`` of the generator version and all content arguments.

    Defaults are filled in before hashing (see :func:`content_arguments`), so ``n=5000`` and no
    ``n`` give the same folder.

    Raises:
        ValueError: unknown ``name`` or bad parameters.
    """
    if name not in GENERATORS:
        raise ValueError(f"embedded dataset name must be one of {sorted(GENERATORS)}, got {name!r}")
    arguments = content_arguments(name, params)
    key = json.dumps({"version": GENERATORS[name].GENERATOR_VERSION, "params": arguments}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(root if root is not None else default_root()) / f"{name}-{digest}"


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a readable datalist whose every image file exists."""
    try:
        content = json.loads((folder / DATALIST_NAME).read_text())
    except (OSError, ValueError):
        return False
    items = [item for key, value in content.items() if key != "metadata" for item in value]
    return bool(items) and all((folder / item["image"]).is_file() for item in items)


def ensure_dataset(name: str, root: str | Path | None = None, progress: bool = True, **params) -> Path:
    """Path of the datalist of embedded dataset ``name``, generating it first if needed.

    Args:
        name: ``synthetic2d`` or ``simba3d``.
        root: cache root (default: ``$SHORTCUT_KD_DATA`` or ``~/.cache/shortcut-kd``).
        progress: show progress bars while generating.
        **params: arguments of the generator (``data_prep.synthetic2d.generate`` or
            ``data_prep.simba3d.generate``), e.g. ``n=5000, size=64``; they select the folder.

    Returns:
        path of ``datalist.json`` inside ``<root>/<name>-<hash>``.

    Raises:
        ValueError: unknown name or bad parameters, or a cache root that is a file.
    """
    final = dataset_folder(name, root, **params)
    if is_complete(final):
        return final / DATALIST_NAME
    cache = final.parent
    if cache.exists() and not cache.is_dir() or any(p.is_file() for p in cache.parents if p.exists()):
        source = f"${ENV_ROOT}" if root is None and os.environ.get(ENV_ROOT) else "the cache root"
        raise ValueError(f"{source} '{cache}' must be a folder for the embedded datasets, but it (or a parent) is a file")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final.parent, STAGING_PATTERNS)
    staging = final.parent / staging_name(f".{final.name}.tmp-")
    try:
        GENERATORS[name].generate(staging, progress=progress, verbose=False, **params)
        if final.exists() and not is_complete(final):
            retired = final.parent / staging_name(f".{final.name}.retired-")
            try:
                os.replace(final, retired)
                shutil.rmtree(retired, ignore_errors=True)
            except FileNotFoundError:
                pass  # another process moved it first
        try:
            os.rename(staging, final)
        except OSError:
            if not is_complete(final):  # the target appeared meanwhile but is unusable
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / DATALIST_NAME
