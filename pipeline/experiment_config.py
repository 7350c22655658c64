"""What an experiment is: its methods (a bundle, override files, settings, what each needs) and
its config file (scenarios, methods, settings), checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pipeline.bundles import BUNDLES_ROOT, scenario_names

EXPERIMENTS = BUNDLES_ROOT / "common" / "experiments"
BASELINE_CONFIGS = BUNDLES_ROOT / "baseline" / "configs"
MITIGATION = BASELINE_CONFIGS / "mitigation"
# the methods whose trained models the bundles' analysis workflows (layer analysis, saliency) read
ANALYSED_METHODS = ("erm", "reference", "teacher", "distilled")


@dataclass(frozen=True)
class Method:
    """A method = a bundle, its override files, fixed settings, and the methods it needs first.

    ``starts_from``: a method whose trained model becomes this one's ``init_checkpoint`` when
    both are in the experiment (the teacher starts from the source model; without it, from scratch).
    """

    bundle: str
    overrides: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    starts_from: str | None = None


def _mitigation(name: str, needs: tuple[str, ...] = ()) -> Method:
    return Method("baseline", (str(MITIGATION / f"{name}.yaml"),), needs=needs)


METHODS: dict[str, Method] = {
    "source": Method("baseline", (str(BASELINE_CONFIGS / "source.yaml"),)),
    "erm": Method("baseline"),
    "reference": Method("baseline", settings={"train_bias_mode": "never"}),
    "teacher": Method("teacher", starts_from="source"),
    "distilled": Method("distillation", needs=("teacher",)),
    "augmentation": _mitigation("augmentation"),
    "random_artifact": _mitigation("random_artifact"),
    "group_balanced": _mitigation("group_balanced"),
    "group_reweight": _mitigation("group_reweight"),
    "group_dro": _mitigation("group_dro"),
    "jtt": _mitigation("jtt", needs=("erm",)),
    "dfr": _mitigation("dfr", needs=("erm",)),
}

# what each method needs beyond the biased training set (the headline table's "needs" column)
METHOD_NEEDS = {
    "source": "external labelled data",
    "erm": "-",
    "reference": "artifact-free data",
    "teacher": "the clean teacher subset, the source model",
    "distilled": "the teacher",
    "augmentation": "-",
    "random_artifact": "artifact type",
    "group_balanced": "bias labels",
    "group_reweight": "bias labels",
    "group_dro": "bias labels",
    "jtt": "-",
    "dfr": "the clean teacher subset",
}


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
        content = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(content) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"experiment config '{path}': unknown key(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        config = cls(**content)
        config.validate()
        return config

    def validate(self) -> None:
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


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` in the order of :data:`METHODS`, where each method's needs come first."""
    return [m for m in METHODS if m in methods]
