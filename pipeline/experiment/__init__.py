"""The end-to-end experiment (``python -m pipeline.experiment``): every method of the catalogue
through its bundle, then the report.

    catalogue  the methods: bundle, override files, settings, upstream models, what each needs
    config     the experiment file (scenarios, methods, settings), checked against the bundles
    plan       each run's overrides, the data it reads, the fingerprints that decide --resume
    outputs    the output folder's manifest and --fresh
    run        the runner and its command line
    report     results, headline, acceptance summary, figures
"""

from pipeline.experiment.catalogue import ANALYSED_METHODS, METHOD_NEEDS, METHODS, Method, Upstream
from pipeline.experiment.config import ExperimentConfig, ordered_methods
from pipeline.experiment.outputs import MANIFEST, fresh_output
from pipeline.experiment.plan import run_settings
from pipeline.experiment.run import main, run_experiment

__all__ = [
    "ANALYSED_METHODS", "METHOD_NEEDS", "METHODS", "MANIFEST", "ExperimentConfig", "Method", "Upstream",
    "fresh_output", "main", "ordered_methods", "run_experiment", "run_settings",
]  # fmt: skip
