"""Glue between the library and MONAI's workflow engine, shared by every bundle.

``datalist`` loads and validates one role of a datalist, ``predictions`` writes per-sample
prediction files from an evaluator, ``evaluation`` runs the named test sets of a bundle.
"""
