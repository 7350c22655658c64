"""Glue between the library and MONAI's workflow engine, shared by every bundle.

``datalist`` loads and validates one role of a datalist, ``predictions`` writes per-sample
prediction files from an evaluator, ``evaluation`` runs the named test sets of a bundle,
``resumable_checkpoint`` resumes an interrupted training (only with the same config),
``finite_checks`` stops on NaN/infinite images and losses.
"""
