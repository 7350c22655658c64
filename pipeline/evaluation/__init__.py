"""Evaluation: the protocol (test sets, prediction files, metrics), layer analysis, saliency maps and the report."""

from pipeline.evaluation.counterfactual import counterfactual_stage_kl
from pipeline.evaluation.figures import save_figure
from pipeline.evaluation.layer_features import LayerFeatures, collect_layer_features
from pipeline.evaluation.layer_figures import plot_layer_curves
from pipeline.evaluation.layers import analyse_layers
from pipeline.evaluation.linear_probes import LinearProbe, fit_linear_probe, probe_aucs
from pipeline.evaluation.metrics import (
    UndefinedMetricWarning,
    accuracy,
    auc,
    auc_with_ci,
    delta_fpr,
    delta_tpr,
    expected_calibration_error,
    false_positive_rate,
    group_accuracies,
    rates_by_group,
    resampled_aucs,
    roc_curve,
    true_positive_rate,
    worst_group_accuracy,
)
from pipeline.evaluation.prediction_depth import (
    PredictionDepth,
    knn_predict,
    prediction_depth,
    prediction_depths,
)
from pipeline.evaluation.prediction_file import (
    PredictionWriter,
    load_predictions,
    predicted_labels,
    validate_predictions,
)
from pipeline.evaluation.protocol import (
    METRIC_COLUMNS,
    TEST_SETS,
    acceptance,
    counterfactual_delta_tpr,
    flip_rate,
    gap_closed,
    results_table,
    summarize,
)
from pipeline.evaluation.report import build_report, load_results, write_results
from pipeline.evaluation.saliency import default_target_layer, saliency_grid, saliency_maps
from pipeline.evaluation.verification import recompute_results, verify_report

__all__ = [
    "METRIC_COLUMNS",
    "TEST_SETS",
    "PredictionWriter",
    "acceptance",
    "counterfactual_delta_tpr",
    "gap_closed",
    "results_table",
    "write_results",
    "UndefinedMetricWarning",
    "accuracy",
    "auc",
    "auc_with_ci",
    "build_report",
    "default_target_layer",
    "delta_fpr",
    "delta_tpr",
    "expected_calibration_error",
    "false_positive_rate",
    "flip_rate",
    "group_accuracies",
    "load_predictions",
    "load_results",
    "predicted_labels",
    "rates_by_group",
    "recompute_results",
    "resampled_aucs",
    "roc_curve",
    "saliency_grid",
    "saliency_maps",
    "save_figure",
    "summarize",
    "true_positive_rate",
    "validate_predictions",
    "verify_report",
    "worst_group_accuracy",
    "LayerFeatures",
    "LinearProbe",
    "PredictionDepth",
    "analyse_layers",
    "collect_layer_features",
    "counterfactual_stage_kl",
    "fit_linear_probe",
    "knn_predict",
    "plot_layer_curves",
    "prediction_depth",
    "prediction_depths",
    "probe_aucs",
]
