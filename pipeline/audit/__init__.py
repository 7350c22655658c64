"""Audit a trained model for shortcuts, without knowing the artifact (``python -m pipeline.audit``).

- :mod:`pipeline.audit.model`: the network, weights and preprocessing of a trained model, from an
  experiment's method folder, an exported bundle, or a checkpoint plus a network config;
- :mod:`pipeline.audit.data`: the images of one datalist role, preprocessed once (labels optional);
- :mod:`pipeline.audit.candidates`: the candidate shortcuts, a generic grid of the project's transforms;
- :mod:`pipeline.audit.scan`: counterfactual pairs in batches, ranked by flip rate;
- :mod:`pipeline.audit.occlusion`: occlusion sensitivity per class and per 3x3 region;
- :mod:`pipeline.audit.suspected`: a suspected artifact through the evaluation protocol;
- :mod:`pipeline.audit.report`: ``audit.json``, ``audit.md`` and figures;
- :mod:`pipeline.audit.run`: one audit end to end, and the bundle workflow's entry.

See docs/audit.md.
"""

from pipeline.audit.candidates import REGIONS, Candidate, candidate_library
from pipeline.audit.model import AuditModel, load_audit_model
from pipeline.audit.run import FLIP_THRESHOLD, audit_model, run_audit, run_workflow

__all__ = [
    "FLIP_THRESHOLD",
    "REGIONS",
    "AuditModel",
    "Candidate",
    "audit_model",
    "candidate_library",
    "load_audit_model",
    "run_audit",
    "run_workflow",
]
