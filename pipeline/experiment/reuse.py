"""Reuse the finished trainings of other experiments: a method that another experiment already
trained with the same fingerprint (its bundles' configs with the overrides, its data and the
fingerprints of the methods it reads; :class:`pipeline.experiment.plan.Fingerprints`) is copied
in instead of trained again, and ``--resume`` then skips it.

The copy is the whole method folder (models, predictions, evaluation, analyses) plus
``reused_from.json`` naming where it came from, and the training config the report keeps; the fingerprint compares paths inside an
experiment relative to its folder, so a copy is the same result.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.experiment.config import ExperimentConfig
from pipeline.experiment.plan import Fingerprints, finished_fingerprint, saved_config

REUSED_FROM = "reused_from.json"


def reuse_trainings(
    config: ExperimentConfig,
    sources: Iterable[str | Path],
    fingerprint_of: Callable[[str, str], str] | None = None,
) -> dict[str, str]:
    """Copy into ``config.output`` every method of ``config`` that one of the experiment folders in
    ``sources`` finished with the same fingerprint and that ``config.output`` has not finished with it.

    Args:
        sources: other experiments' output folders (missing ones and ``config.output`` itself are skipped).
        fingerprint_of: ``(scenario, method) -> fingerprint``; default :meth:`Fingerprints.method`.

    Returns:
        ``{"<scenario>/<method>": source folder}`` for each method copied.
    """
    target = Path(config.output).absolute()
    fingerprint_of = fingerprint_of or Fingerprints(config).method
    folders = [Path(s).absolute() for s in sources]
    folders = [f for f in folders if f.is_dir() and f != target]
    copied = {}
    for scenario in config.scenarios:
        for method in config.methods:
            wanted = fingerprint_of(scenario, method)
            destination = target / scenario / method
            if finished_fingerprint(destination) == wanted:
                continue
            source = next((f for f in folders if finished_fingerprint(f / scenario / method) == wanted), None)
            if source is None:
                continue
            partial = destination.with_name(f".{method}.reusing")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source / scenario / method, partial, symlinks=True)
            write_json({"experiment": str(source), "fingerprint": wanted}, partial / REUSED_FROM)
            shutil.rmtree(destination, ignore_errors=True)
            partial.rename(destination)
            config_file = source / saved_config(scenario, method)
            if config_file.is_file():  # the training config it ran with, for the report
                (target / saved_config(scenario, method)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(config_file, target / saved_config(scenario, method))
            copied[f"{scenario}/{method}"] = str(source)
    return copied
