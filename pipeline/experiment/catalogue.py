"""The methods an experiment can run: one declaration per method, read by everything else.

A method is its bundle, its override files, fixed settings, the upstream models it reads (by
method name, with the config id that receives the model's path), what it needs to know beyond
the biased training set (the headline table's "needs" column), and whether the bundles'
analysis workflows (layers, saliency) run on it. Adding a mitigation method means its Python
module, its YAML under ``bundles/baseline/configs/mitigation/`` and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pipeline.bundles import BUNDLES_ROOT

BASELINE_CONFIGS = BUNDLES_ROOT / "baseline" / "configs"
MITIGATION = BASELINE_CONFIGS / "mitigation"


@dataclass(frozen=True)
class Upstream:
    """A trained model that a method reads: ``<output>/<scenario>/<method>/models/<model>`` goes
    to the config id ``setting``. ``optional``: used only when ``method`` is in the same
    experiment (the teacher starts from the source model, else from scratch)."""

    method: str
    setting: str
    model: str = "model.pt"
    optional: bool = False


@dataclass(frozen=True)
class Method:
    """One method of the experiment (see the module docstring)."""

    name: str
    bundle: str
    overrides: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    upstream: tuple[Upstream, ...] = ()
    needs_to_know: str = "-"
    analysed: bool = False

    @property
    def needs(self) -> tuple[str, ...]:
        """The methods that must be in the same experiment (its required upstream models)."""
        return tuple(u.method for u in self.upstream if not u.optional)


def _mitigation(name: str, needs_to_know: str = "-", upstream: tuple[Upstream, ...] = ()) -> Method:
    return Method(
        name, "baseline", (str(MITIGATION / f"{name}.yaml"),), upstream=upstream, needs_to_know=needs_to_know
    )


ERM_MODEL = Upstream("erm", "erm_checkpoint")

CATALOGUE: tuple[Method, ...] = (
    Method(
        "source", "baseline", (str(BASELINE_CONFIGS / "source.yaml"),), needs_to_know="external labelled data"
    ),
    Method("erm", "baseline", analysed=True),
    Method(
        "reference",
        "baseline",
        settings={"train_bias_mode": "never"},
        needs_to_know="artifact-free data",
        analysed=True,
    ),  # fmt: skip
    Method(
        "teacher",
        "teacher",
        upstream=(Upstream("source", "init_checkpoint", optional=True),),
        needs_to_know="the clean teacher subset, the source model",
        analysed=True,
    ),  # fmt: skip
    Method(
        "distilled",
        "distillation",
        upstream=(Upstream("teacher", "teacher_checkpoint", "teacher.pt"),),
        needs_to_know="the teacher",
        analysed=True,
    ),  # fmt: skip
    _mitigation("augmentation"),
    _mitigation("random_artifact", "artifact type"),
    _mitigation("group_balanced", "bias labels"),
    _mitigation("group_reweight", "bias labels"),
    _mitigation("group_dro", "bias labels"),
    _mitigation("jtt", upstream=(ERM_MODEL,)),
    _mitigation("dfr", "the clean teacher subset", upstream=(ERM_MODEL,)),
    _mitigation("clean_images", "the clean teacher subset"),
)

# in catalogue order, where each method's upstream methods come first
METHODS: dict[str, Method] = {m.name: m for m in CATALOGUE}
# derived views, for the report
METHOD_NEEDS: dict[str, str] = {m.name: m.needs_to_know for m in CATALOGUE}
ANALYSED_METHODS: tuple[str, ...] = tuple(m.name for m in CATALOGUE if m.analysed)


def _check_catalogue() -> None:
    """Each upstream method is declared before the method that reads it (the run order)."""
    seen: set[str] = set()
    for method in CATALOGUE:
        late = [u.method for u in method.upstream if u.method not in seen]
        if late:
            raise ValueError(
                f"catalogue: method '{method.name}' reads {late}, which must be declared before it"
            )
        seen.add(method.name)


_check_catalogue()
