"""What an experiment is: its config file (scenarios, methods from the catalogue, settings),
checked before anything runs: every setting must be a config id of the bundles it reaches."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from pipeline.bundles import ANALYSES, BUNDLES_ROOT, config_files, scenario_names
from pipeline.bundles.overrides import known_id, merged_config, unknown_key_message
from pipeline.experiment.catalogue import METHODS

EXPERIMENTS = BUNDLES_ROOT / "common" / "experiments"


@dataclass
class ExperimentConfig:
    output: str = "runs/experiment"
    scenarios: list[str] = field(default_factory=lambda: ["localized2d"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    settings: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict] = field(default_factory=dict)
    layer_analysis: bool = True
    saliency: bool = True

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read an experiment YAML file.

        Raises:
            ValueError: missing file, unknown keys, unknown scenario or method names.
        """
        path = Path(path)
        if not path.is_file() and (EXPERIMENTS / path).is_file():
            path = EXPERIMENTS / path
        if not path.is_file():
            raise ValueError(
                f"experiment config '{path}' does not exist; shipped ones: {sorted(p.name for p in EXPERIMENTS.glob('*.yaml'))}"
            )
        try:
            content = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" line {where.line + 1}" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            tags = "; tags such as !!python are refused" if isinstance(err, yaml.constructor.ConstructorError) else ""
            raise ValueError(f"experiment config '{path}'{line}: not valid plain YAML ({problem}){tags}") from None
        if not isinstance(content, dict):
            raise ValueError(f"experiment config '{path}' must hold a mapping of keys, got {type(content).__name__}")
        unknown = sorted(set(content) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"experiment config '{path}': unknown key(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        config = cls(**content)
        config.validate()
        return config

    def validate(self) -> None:
        for name, kind in (("scenarios", list), ("methods", list), ("settings", dict), ("method_settings", dict)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ValueError(f"experiment '{name}' must be a {kind.__name__}, got {value!r}")
        bad = [s for s in self.scenarios if s not in scenario_names()]
        if bad:
            raise ValueError(f"unknown scenario(s) {bad}; scenarios: {scenario_names()}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; methods: {list(METHODS)}")
        for method in self.methods:
            missing = [n for n in METHODS[method].needs if n not in self.methods]
            if missing:
                raise ValueError(f"method '{method}' needs {missing} in the same experiment")
        self.check_settings()

    def check_settings(self) -> None:
        """Every key of ``settings`` must be a config id of at least one method's bundle workflows
        (train, evaluate, analyses) in the experiment's scenarios, every key of
        ``method_settings[m]`` one of method ``m``'s, and ``m`` a method of the catalogue.

        Raises:
            ValueError: names the unknown method or key and the closest known one.
        """
        bad = [m for m in self.method_settings if m not in METHODS]
        if bad:
            close = {m: difflib.get_close_matches(m, list(METHODS), n=1) for m in bad}
            hints = "; ".join(f"'{m}'" + (f" (did you mean '{c[0]}'?)" if c else "") for m, c in close.items())
            raise ValueError(f"method_settings: unknown method {hints}; methods: {list(METHODS)}")
        for method, settings in self.method_settings.items():
            if not isinstance(settings, dict):
                raise ValueError(f"method_settings: '{method}' must map config ids to values, got {settings!r}")
            for key in settings:
                if not any(known_id(c, key) for c in self._configs([method])):
                    where = f"method_settings of '{method}': not an id of its bundle '{METHODS[method].bundle}'"
                    raise ValueError(unknown_key_message(key, _union(self._configs([method])), where))
        for key in self.settings:  # any method's ids: one settings block serves every choice of --methods
            if not any(known_id(c, key) for c in self._configs(list(METHODS))):
                where = "settings / --set: not an id of any method's bundle config"
                raise ValueError(unknown_key_message(key, _union(self._configs(list(METHODS))), where))

    def _configs(self, methods: Sequence[str]):
        """The merged raw configs of ``methods``' workflows (train, evaluate, their analyses) in
        every scenario, read lazily (a key is usually found in the first)."""
        for scenario in self.scenarios:
            for method in methods:
                spec = METHODS[method]
                for workflow in ["train", "evaluate", *(ANALYSES if spec.analysed else ())]:
                    yield merged_config(config_files(spec.bundle, workflow, scenario, spec.overrides))


def _union(configs: Iterable[dict]) -> dict:
    """The top-level ids of several configs in one mapping (for the closest-id hint)."""
    return {k: v for config in configs for k, v in config.items()}


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` in catalogue order, where each method's upstream methods come first."""
    return [m for m in METHODS if m in methods]
