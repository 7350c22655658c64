"""Shortcut-learning pipeline: artifact transforms, networks, distillation, mitigation and evaluation.

The MONAI bundles in ``bundles/`` call into this package; everything here is importable
without a GPU and without network access.
"""

__version__ = "0.1.0"
