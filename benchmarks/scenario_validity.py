"""Is a scenario valid? Score a finished experiment's bias-free reference on candidate artifacts
and candidate out-of-distribution sites, without retraining it.

A scenario measures shortcut reliance only if the reference, which never saw the artifact, is not
fooled by it (its bias-inverted AUC close to its bias-free AUC), and its OOD set only if the
reference keeps a useful AUC on it. Both need nothing but inference with the trained reference:

    python -m benchmarks.scenario_validity artifacts --experiment runs/experiment --scenario diffuse2d \
        --candidates benchmarks/configs/diffuse2d_artifacts.yaml --table benchmarks/results/diffuse2d_artifacts.csv --resume
    python -m benchmarks.scenario_validity ood --experiment runs/experiment --scenario localized2d \
        --candidates benchmarks/configs/thorax_ood_sites.yaml --table benchmarks/results/thorax_ood_sites.csv --resume

A candidates file maps a name to an artifact (a config dict with ``_target_``) for ``artifacts``,
or to the generator's OOD-site parameters (``ood_params`` of ``data_prep.synthetic2d.generate``, or
``ood_effects`` of ``data_prep.simba3d.generate``) for ``ood``. Each candidate's row is appended to
the table as soon as it is measured; ``--resume`` skips the candidates already in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from pipeline.atomic import atomic_path
from pipeline.bundles import run_bundle

ARTIFACT_TEST_SETS = {
    "bias_free": {"role": "test", "mode": "never"},
    "bias_inverted": {"role": "test", "mode": "inverted"},
    "cf_with": {"role": "test", "mode": "always"},
}
OOD_TEST_SETS = {
    "ood": {"role": "test_ood", "mode": "as_trained"},
    "ood_bias_free": {"role": "test_ood", "mode": "never"},
}
OOD_DATA_ITEMS = 40
# scenario data parameters a candidate's generated set keeps (the rest: the generator's defaults)
SITE_INDEPENDENT = ("size", "flavour", "seed")  # in-domain items of a candidate's generated set (only its test_ood role is scored)


def load_candidates(path: str | Path) -> dict[str, dict]:
    """``{name: candidate}`` from a YAML mapping.

    Raises:
        ValueError: the file is missing or not a mapping of names to mappings.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"candidates file '{path}' does not exist")
    content = yaml.safe_load(path.read_text())
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ValueError(f"candidates file '{path}' must map names to mappings, got {type(content).__name__}")
    return content


NETWORK_KEYS = ("network_name", "network_options", "spatial_dims", "in_channels", "image_size")
"""Settings of a trained model's network, read back from its ``models/run_settings.json``."""


def trained_network_settings(model_dir: Path) -> dict[str, Any]:
    """The network settings ``model_dir`` (a method folder) was trained with, so that its weights are
    scored in the network they belong to (an experiment of another network than the scenario's own);
    empty when the folder records none.

    Raises:
        ValueError: ``models/run_settings.json`` is not a JSON object.
    """
    path = model_dir / "models" / "run_settings.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(saved).__name__}")
    return {key: saved[key] for key in NETWORK_KEYS if key in saved}


def evaluate_reference(
    experiment: Path, scenario: str, settings: Mapping[str, Any], out_dir: Path, method: str = "reference"
) -> dict[str, dict]:
    """Run the baseline bundle's evaluate workflow on ``method``'s trained model of ``experiment``
    with ``settings`` overridden; returns its metrics per test set."""
    run_bundle(
        "baseline",
        "evaluate",
        scenario,
        settings={
            "output_root": str(experiment / scenario),
            "bundle_name": method,
            "evaluate_dir": str(out_dir),
            "progress_bar": False,
            **trained_network_settings(experiment / scenario / method),
            **settings,
        },
        log_config=False,
    )
    return json.loads((out_dir / "metrics.json").read_text())


def artifact_row(metrics: Mapping[str, dict]) -> dict[str, float]:
    free, inverted = metrics["bias_free"], metrics["bias_inverted"]
    return {
        "bias_free_auc": free["auc"],
        "bias_inverted_auc": inverted["auc"],
        "fooled_by": free["auc"] - inverted["auc"],
        "cf_delta_tpr": metrics["cf_with"]["tpr_bias1"] - free["tpr_bias0"],
    }


def ood_datalist(scenario_params: Mapping[str, Any], data_source: str, candidate: Mapping[str, Any]) -> str:
    """A generated set holding the candidate site as its ``test_ood`` role (few in-domain items)."""
    from data_prep.embedded import ensure_dataset

    kept = {k: v for k, v in scenario_params.items() if k in SITE_INDEPENDENT}
    params = {**kept, **candidate, "n": OOD_DATA_ITEMS, "progress": False}
    return str(ensure_dataset(data_source, **params))


def ood_row(metrics: Mapping[str, dict]) -> dict[str, float]:
    return {
        "ood_auc": metrics["ood"]["auc"],
        "ood_auc_low": metrics["ood"]["auc_low"],
        "ood_auc_high": metrics["ood"]["auc_high"],
        "ood_bias_free_auc": metrics["ood_bias_free"]["auc"],
        "ood_tpr": metrics["ood"]["tpr"],
        "ood_fpr": metrics["ood"]["fpr"],
    }


def scenario_data(scenario: str) -> tuple[str, dict]:
    """The scenario's ``data_source`` and ``data_params`` (from its YAML file)."""
    from pipeline.bundles import BUNDLES_ROOT

    content = yaml.safe_load((BUNDLES_ROOT / "common" / "configs" / "scenarios" / f"{scenario}.yaml").read_text())
    return content["data_source"], dict(content["data_params"])


def append_rows(table: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append ``rows`` to the CSV ``table`` at once (written whole to a temporary file, then renamed)."""
    old = [pd.read_csv(table)] if table.is_file() else []
    with atomic_path(table) as tmp:
        pd.concat(old + [pd.DataFrame(list(rows))], ignore_index=True).to_csv(tmp, index=False, float_format="%.4f")


def append_row(table: Path, row: Mapping[str, Any]) -> None:
    """Append one ``row`` to the CSV ``table`` (:func:`append_rows`)."""
    append_rows(table, [row])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario_validity", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("artifacts", "ood"))
    parser.add_argument("--experiment", default="runs/experiment", help="output folder of a finished experiment")
    parser.add_argument("--scenario", required=True, help="scenario whose trained reference is scored")
    parser.add_argument("--method", default="reference", help="trained method to score (default: reference)")
    parser.add_argument("--candidates", required=True, help="YAML: name -> artifact config or OOD-site parameters")
    parser.add_argument("--table", required=True, help="CSV written row by row")
    parser.add_argument("--resume", action="store_true", help="skip candidates already in the table")
    args = parser.parse_args(argv)
    try:
        candidates = load_candidates(args.candidates)
    except ValueError as err:
        parser.error(str(err))
    experiment, table = Path(args.experiment).absolute(), Path(args.table)
    if not (experiment / args.scenario / args.method / "models" / "model.pt").is_file():
        parser.error(f"{experiment / args.scenario / args.method} holds no trained model (models/model.pt)")
    done = set(pd.read_csv(table)["candidate"]) if args.resume and table.is_file() else set()
    if not args.resume and table.is_file():
        table.unlink()
    scratch = experiment / "scenario_validity" / table.stem  # each candidate's predictions, beside the model
    for name, candidate in candidates.items():
        if name in done:
            print(f"{name}: in the table, skipped", flush=True)
            continue
        out_dir = scratch / name
        if args.kind == "artifacts":
            metrics = evaluate_reference(
                experiment, args.scenario, {"artifact": candidate, "test_sets": ARTIFACT_TEST_SETS}, out_dir, args.method
            )
            row = artifact_row(metrics)
        else:
            source, params = scenario_data(args.scenario)
            datalist = ood_datalist(params, source, candidate)
            metrics = evaluate_reference(
                experiment, args.scenario, {"datalist": datalist, "test_sets": OOD_TEST_SETS}, out_dir, args.method
            )
            row = ood_row(metrics)
        row = {"candidate": name, "method": args.method, "scenario": args.scenario, **row,
               "definition": json.dumps(candidate, sort_keys=True)}  # fmt: skip
        append_row(table, row)
        print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
