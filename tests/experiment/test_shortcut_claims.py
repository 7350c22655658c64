"""The paper's claims on real runs: ERM learns the shortcut; distillation reduces it.

The slow tests run ``make run``'s default experiment restricted to the four methods the claims
are about. The fast test runs ERM and the reference on a smaller set of the same data, with
thresholds set from measurements at that size, so CI exercises the first claim too.
"""

from __future__ import annotations

import json

import pytest

from pipeline.experiment import ExperimentConfig, run_experiment

METHODS = ["erm", "reference", "teacher", "distilled"]
QUIET = {"progress_bar": False, "tensorboard": False}


def _claims(tmp_path, settings, methods=METHODS) -> dict:
    config = ExperimentConfig(
        output=str(tmp_path),
        methods=methods,
        settings={**QUIET, **settings},
        layer_analysis=False,
        saliency=False,
    )
    report = run_experiment(config)
    return json.loads((report / "acceptance.json").read_text())["localized2d"]


@pytest.fixture(scope="module")
def default_claims(tmp_path_factory):
    return _claims(tmp_path_factory.mktemp("default_run"), {})


@pytest.mark.slow
def test_default_run_erm_learns_the_shortcut_and_distillation_reduces_it(default_claims):
    # measured on the default run (README, Results): ERM gap 0.74, ΔTPR 0.86; distilled +0.19 AUC
    assert default_claims["erm_gap"] >= 0.2
    assert default_claims["erm_delta_tpr"] >= 0.3
    assert default_claims["distilled_bias_inverted_auc"] - default_claims["erm_bias_inverted_auc"] >= 0.1


@pytest.mark.slow
@pytest.mark.xfail(reason="target of issue 9 not reached yet: distillation closes ~1/4 of the gap (README)")
def test_default_run_distillation_closes_half_of_the_gap(default_claims):
    assert default_claims["gap_closed"] >= 0.5
    assert abs(default_claims["distilled_delta_tpr"]) <= 0.5 * abs(default_claims["erm_delta_tpr"])


# The fast version: the same data generator and shortcut at a smaller size (900 training
# images), ERM against the reference only (about a minute on 2 cores). Measured at this size
# (seed 0): ERM bias-inverted AUC 0.062 against 0.755 (gap 0.69), ΔTPR 1.0; the thresholds leave
# room for other CPUs' arithmetic. Distillation gains nothing at this size (0.066), so its claim
# is only tested on the default run above.
SMALL = {"data_params": {"n": 2000, "size": 64, "flavour": "thorax", "teacher_size": 500}}


def test_small_run_erm_learns_the_shortcut(tmp_path):
    claims = _claims(tmp_path, SMALL, methods=["erm", "reference"])
    assert claims["erm_gap"] >= 0.4
    assert claims["erm_delta_tpr"] >= 0.6
