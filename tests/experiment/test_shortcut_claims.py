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
def test_default_run_erm_learns_the_shortcut_and_distillation_removes_it(default_claims):
    """The targets of the issues, not what was measured: the test fails while a target is unmet.

    Measured with the default teacher (fine-tuned with flips, noise and blur; final epoch) over
    five teacher seeds on one 2-core AMD EPYC machine (benchmarks/results/teacher_seeds.csv, run
    localized2d_acquisition_teacher): see the README, "The result depends on the teacher".
    """
    # ERM learns the shortcut: measured gap 0.77 on three machines, counterfactual ΔTPR 0.75-0.76
    assert default_claims["erm_gap"] >= 0.5
    assert default_claims["erm_delta_tpr_counterfactual"] >= 0.5
    # the student removes it (issue "The student's result must not hinge on its teacher's luck"):
    # gap closed >= 0.80, |counterfactual ΔTPR| <= 0.10, bias-free AUC at most 0.02 below ERM's
    assert default_claims["gap_closed"] >= 0.80
    assert abs(default_claims["distilled_delta_tpr_counterfactual"]) <= 0.10
    assert default_claims["distilled_bias_free_auc"] >= default_claims["erm_bias_free_auc"] - 0.02
    assert default_claims["distilled_verdict"] == "removed"
    # never below ERM on either test set
    assert default_claims["distilled_bias_inverted_auc"] >= default_claims["erm_bias_inverted_auc"]
    assert default_claims["distilled_bias_free_auc"] >= default_claims["erm_bias_free_auc"]


# The fast version: the same data generator and shortcut at a smaller size (2,000 images: 900
# training, 500 teacher, the rest validation and test), no source model (the teacher trains from
# scratch, with the strong augmentation), run once for both claims (about 2.5 minutes on 2 idle
# cores). Measured at this size (seed 0, 2 torch threads) on two x86 machines (an Intel Xeon and
# an AMD EPYC, the latter with the teacher's final epoch instead of its best held-out one): the
# same numbers to 3 decimals. ERM bias-inverted AUC 0.061 against the reference's 0.812
# (counterfactual ΔTPR 1.00); the teacher reaches only 0.693 (bias-free 0.699, cf ΔTPR 0.01), and
# the student started from it 0.592 (71% of the gap, counterfactual ΔTPR 0.31) at logit weight 5;
# at the default logit weight 10 (AMD EPYC, this run's settings, runs/small_claims_logit10 by
# tests.experiment.test_shortcut_claims._claims) 0.656: 79% of the gap, counterfactual ΔTPR 0.14.
# It keeps part of the shortcut, as a student of a weak teacher does; the slow test asserts
# removal with the source model.
# Cross-machine spread, as measured: none at this size (the two machines above agree to 3
# decimals); the largest measured anywhere in the project is 0.29 of gap closed, the default
# scenario's student between the same two CPU families (67% vs 96%, the previous teacher recipe;
# README, "The result depends on the teacher"). The thresholds leave at least that much room:
# ERM's gap 0.75 against >= 0.4 (0.35 of room), gap closed 0.79 against >= 0.4 (0.39), the
# student's counterfactual ΔTPR 0.14 against <= 0.6 x ERM's 1.00 (0.46). The run is pinned to
# the 2 torch threads it was measured with (num_threads), so a CI machine with more cores does
# not add a thread-count difference to the CPU's own.
SMALL = {"data_params": {"n": 2000, "size": 64, "flavour": "thorax", "teacher_size": 500}, "num_threads": 2}


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
