"""The paper's claims on real runs: ERM learns the shortcut; distillation reduces it.

The slow tests run ``make run``'s default experiment restricted to the four methods the claims
are about. The fast test runs ERM and the reference on a smaller set of the same data, with
thresholds set from measurements at that size, so CI exercises the first claim too.
"""

from __future__ import annotations

import json

import pytest

from pipeline.experiment import ExperimentConfig, run_experiment

METHODS = ["source", "erm", "reference", "teacher", "distilled"]
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
def test_default_run_erm_learns_the_shortcut_and_distillation_closes_the_gap(default_claims):
    # measured on the default run (README, Results; 2 torch threads): ERM gap 0.77, ΔTPR 0.81
    # (counterfactual 0.75); the student closes 96% of the gap (training seeds 1 and 2 in the
    # README's seed table), counterfactual ΔTPR -0.06, bias-free AUC 0.869 against ERM's 0.876.
    # Bias-inverted AUC CIs are about ±0.02-0.03, so the 0.85 floor leaves room for another CPU's
    # arithmetic and thread count; the counterfactual ΔTPR's bound (0.15) is its measured size
    # plus about three times its binomial SD over 500 positives.
    assert default_claims["erm_gap"] >= 0.5
    assert default_claims["erm_delta_tpr"] >= 0.3
    assert default_claims["gap_closed"] >= 0.85
    erm_cf, distilled_cf = (default_claims[f"{m}_delta_tpr_counterfactual"] for m in ("erm", "distilled"))
    assert abs(distilled_cf) <= 0.15 and abs(distilled_cf) <= 0.5 * abs(erm_cf)
    # in-distribution ΔTPR (25 positives without the patch: ±0.2): 0.81 -> 0.10
    assert abs(default_claims["distilled_delta_tpr"]) <= 0.5 * abs(default_claims["erm_delta_tpr"])
    # bias-free AUC kept: within the two AUCs' CI widths (about ±0.02 each) of ERM's
    assert default_claims["distilled_bias_free_auc"] >= default_claims["erm_bias_free_auc"] - 0.04


# The fast version: the same data generator and shortcut at a smaller size (2,000 images: 900
# training, 500 teacher, the rest validation and test), no source model (the teacher trains from scratch), run once for both
# claims (about 2.5 minutes on 2 idle cores). Measured at this size (seed 0, 2 torch threads):
# ERM bias-inverted AUC 0.061 against the reference's 0.812 (counterfactual ΔTPR 1.00); the teacher
# reaches only 0.693, and the student started from it 0.592 (71% of the gap closed, counterfactual
# ΔTPR 0.31). The thresholds leave room for other CPUs' arithmetic: a student at 0.4 of the gap and
# 0.6 of ERM's counterfactual ΔTPR would still show that distillation reduces the shortcut.
SMALL = {"data_params": {"n": 2000, "size": 64, "flavour": "thorax", "teacher_size": 500}}


@pytest.fixture(scope="module")
def small_claims(tmp_path_factory):
    return _claims(
        tmp_path_factory.mktemp("small_run"), SMALL, methods=["erm", "reference", "teacher", "distilled"]
    )


def test_small_run_erm_learns_the_shortcut(small_claims):
    assert small_claims["erm_gap"] >= 0.4
    assert small_claims["erm_delta_tpr"] >= 0.6


def test_small_run_distillation_reduces_the_shortcut(small_claims):
    assert small_claims["gap_closed"] >= 0.4
    erm_cf, distilled_cf = (small_claims[f"{m}_delta_tpr_counterfactual"] for m in ("erm", "distilled"))
    assert distilled_cf <= 0.6 * erm_cf
