"""Evaluate a trained network on the named test sets of a bundle (one MONAI evaluator each)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from monai.transforms import Compose

from pipeline.atomic import write_json
from pipeline.engine.datalist import load_role
from pipeline.engine.predictions import PredictionWriter
from pipeline.transforms import ShortcutInjectiond

TEST_SETS_FILE = "test_sets.json"
DEFAULT_TEST_SETS = {
    "in_distribution": {"role": "test", "mode": "as_trained"},
    "bias_free": {"role": "test", "mode": "never"},
    "bias_inverted": {"role": "test", "mode": "inverted"},
    "cf_with": {"role": "test", "mode": "always"},
}


def evaluate_test_sets(
    network: torch.nn.Module,
    datalist: str | Path,
    preprocessing: Sequence,
    injection: Mapping,
    output_dir: str | Path,
    test_sets: Mapping[str, Mapping] | None = None,
    postprocessing: Sequence = (),
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> dict[str, dict]:
    """Run ``network`` on each test set and write ``predictions_<name>.csv`` and ``metrics.json``.

    A test set is a datalist role seen through the shortcut injection in one mode, so one
    datalist gives the in-distribution, bias-free, bias-inverted and counterfactual sets. For
    pre-biased data (``injection["artifact"]`` None) a set is the role's matching group instead
    (:meth:`ShortcutInjectiond.select`); counterfactual sets (mode "always") and sets left without
    both classes are not possible there. ``test_sets.json`` records which sets were evaluated and
    why the others were not.

    Args:
        network: trained classifier returning logits (B, 2).
        datalist: datalist JSON path.
        preprocessing: dictionary transforms applied before the injection (loading, scaling).
        injection: keyword arguments of :class:`pipeline.transforms.ShortcutInjectiond` except
            ``mode`` (keys, artifact, rates, seed...).
        output_dir: folder for the prediction files and ``metrics.json``.
        test_sets: ``{name: {"role": ..., "mode": ...}}``; defaults to :data:`DEFAULT_TEST_SETS`.
            Roles absent from the datalist are skipped only when the role is ``test_ood``.
        postprocessing: dictionary transforms applied after the injection (type conversion).
        batch_size, num_workers, device, amp: evaluator settings.

    Returns:
        ``{test set name: summary metrics}`` as also written to ``metrics.json``.
    """
    from pipeline.evaluation.metrics import UndefinedMetricWarning, load_predictions, summarize

    output_dir = Path(output_dir)
    test_sets = dict(DEFAULT_TEST_SETS if test_sets is None else test_sets)
    available = _roles(datalist)
    summaries: dict[str, dict] = {}
    prebiased = injection.get("artifact") is None
    not_possible: dict[str, str] = {}
    for name, spec in test_sets.items():
        role, mode = spec.get("role", "test"), spec.get("mode", "as_trained")
        if role not in available and role == "test_ood":
            continue
        if prebiased:
            reason = _prebiased_reason(datalist, role, mode, injection)
            if reason:
                not_possible[name] = reason
                continue
        csv_path = output_dir / f"predictions_{name}.csv"
        predict_role(
            network, datalist, role, preprocessing, {**dict(injection), "mode": mode}, csv_path,
            postprocessing, batch_size, num_workers, device, amp,
        )  # fmt: skip
        with warnings.catch_warnings():
            if mode in ("never", "always"):  # one artifact group is empty by design: ΔTPR/ΔFPR are NaN
                warnings.simplefilter("ignore", UndefinedMetricWarning)
            summaries[name] = summarize(load_predictions(csv_path))
    write_json(
        {"prebiased": prebiased, "evaluated": list(summaries), "not_possible": not_possible},
        output_dir / TEST_SETS_FILE,
    )
    write_json(summaries, output_dir / "metrics.json")
    return summaries


def _prebiased_reason(datalist: str | Path, role: str, mode: str, injection: Mapping) -> str | None:
    """Why a test set cannot be built from a pre-biased role's existing groups, or None."""
    if mode == "always":
        return "no counterfactual pairs: the bias is baked into the images"
    items = ShortcutInjectiond(**{**dict(injection), "mode": mode}).select(load_role(datalist, role))
    classes = {int(item["label"]) for item in items}
    if classes != {0, 1}:
        group = {"never": "bias-free ", "inverted": "bias-inverted resample of the ", "as_trained": ""}[mode]
        return f"the {group}{role} items hold class(es) {sorted(classes)} only (AUC needs both)"
    return None


def _roles(datalist: str | Path) -> set[str]:
    with open(datalist) as handle:
        return {k for k, v in json.load(handle).items() if isinstance(v, list)}


def predict_role(
    network: torch.nn.Module,
    datalist: str | Path,
    role: str,
    preprocessing: Sequence,
    injection: Mapping,
    output_csv: str | Path,
    postprocessing: Sequence = (),
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> Path:
    """Write ``network``'s per-sample predictions on one datalist role seen through one injection.

    Args:
        injection: keyword arguments of :class:`pipeline.transforms.ShortcutInjectiond`, mode included;
            for pre-biased data the role's items of that mode's group are predicted.
        output_csv: CSV written by :class:`PredictionWriter` (id, label, bias, prob, pred).
        other arguments: as :func:`evaluate_test_sets`.
    """
    injection = ShortcutInjectiond(**dict(injection))
    items = injection.select(load_role(datalist, role))
    transform = Compose([*preprocessing, injection, *postprocessing])
    loader = DataLoader(Dataset(items, transform), batch_size=batch_size, num_workers=num_workers)
    evaluator = SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network,
        inferer=SimpleInferer(),
        val_handlers=[PredictionWriter(output_csv)],
        amp=amp,
        decollate=False,
    )
    evaluator.run()
    return Path(output_csv)
