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
    # measured on the default run (README, Results; seed 0, 2 torch threads) on two x86 machines:
    # ERM gap 0.77 on both, ΔTPR 0.81-0.86 (counterfactual 0.75-0.76); the student closes 96% of
    # the gap on one and 67% on the other, whose teacher selected another epoch and reacts less to
    # the patch (README, "The result depends on the teacher": 64-78% over student and teacher
    # seeds there). The 0.55 floor is below every measurement by more than the bias-inverted
    # AUCs' CIs (about ±0.03 on 0.77 of gap: ±0.05).
    assert default_claims["erm_gap"] >= 0.5
    assert default_claims["erm_delta_tpr"] >= 0.3
    assert default_claims["gap_closed"] >= 0.55
    erm_cf, distilled_cf = (default_claims[f"{m}_delta_tpr_counterfactual"] for m in ("erm", "distilled"))
    # counterfactual ΔTPR: 0.75 -> -0.06 and 0.76 -> 0.27 on the two machines
    assert abs(distilled_cf) <= 0.5 * abs(erm_cf)
    # in-distribution ΔTPR (25 positives without the patch: ±0.2): 0.81 -> 0.10 and 0.86 -> 0.33
    assert abs(default_claims["distilled_delta_tpr"]) <= 0.5 * abs(default_claims["erm_delta_tpr"])
    # bias-free AUC kept: within the two AUCs' CI widths (about ±0.02 each) of ERM's (0.869 vs
    # 0.876 and 0.875 vs 0.880)
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
    # abs(): a student whose shortcut is reversed (negative ΔTPR) has not lost it
    assert abs(distilled_cf) <= 0.6 * abs(erm_cf)
