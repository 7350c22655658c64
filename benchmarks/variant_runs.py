"""Command-line pieces shared by the scripts that train the distillation bundle once per variant
against a finished experiment (sweep_distillation_stages.py, diagnose_distillation.py)."""

from __future__ import annotations

import argparse
from typing import Iterable, Mapping

from pipeline.bundles.overrides import parse_setting


def variant_parser(description: str, variants: Mapping[str, dict]) -> argparse.ArgumentParser:
    """``--experiment``, ``--scenario``, ``--variants`` and ``--set key=value``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--experiment", default="runs/experiment", help="output folder of a finished experiment"
    )
    parser.add_argument("--scenario", default="localized2d")
    parser.add_argument("--variants", nargs="+", choices=list(variants), default=list(variants))
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every variant")
    return parser


def parse_overrides(pairs: Iterable[str]) -> dict:
    """``key=value`` pairs (:func:`pipeline.bundles.overrides.parse_setting`); exits naming a bad one."""
    try:
        return dict(parse_setting(pair) for pair in pairs)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def variant_folder(prefix: str, name: str) -> str:
    """The run folder of a variant: its name with every non-alphanumeric character as ``_``."""
    return prefix + "".join(c if c.isalnum() else "_" for c in name)
