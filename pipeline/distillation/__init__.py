"""Intermediate-layer knowledge distillation from a specialist teacher.

``hooks`` captures stage features with forward hooks, ``losses`` defines the stage and logit
terms, ``teacher`` saves/loads a teacher with its fitted probes, ``target_cache`` reuses the
teacher's targets, ``trainer`` is the MONAI trainer subclass, ``builder`` assembles the objective.
"""
