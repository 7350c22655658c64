"""The evaluate workflow's parts: a test set's data, and one MONAI evaluator per test set.

``bundles/common/configs/evaluation.yaml`` declares the pieces (the dataset and loader factories,
a ``SupervisedEvaluator`` partial, MONAI's ``CheckpointLoader``, :class:`PredictionWriter`);
:class:`TestSetEvaluation` runs them on the protocol's test sets
(:data:`pipeline.evaluation.protocol.TEST_SETS`) and hands the prediction files to the protocol,
which computes every number once (:func:`pipeline.evaluation.protocol.write_results`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from monai.data import Dataset
from monai.transforms import Compose

from pipeline.atomic import write_json
from pipeline.engine.datalist import load_role
from pipeline.evaluation import protocol
from pipeline.evaluation.prediction_file import PredictionWriter, prediction_file_name
from pipeline.transforms import ShortcutInjectiond


def evaluation_dataset(
    datalist: str | Path,
    role: str,
    mode: str,
    preprocessing: Sequence,
    injection: Mapping,
    postprocessing: Sequence = (),
) -> Dataset:
    """A datalist role seen through the shortcut injection in one mode (pre-biased data: the
    role's items of that mode's group, :meth:`ShortcutInjectiond.select`).

    Args:
        preprocessing: dictionary transforms applied before the injection (loading, scaling).
        injection: keyword arguments of :class:`ShortcutInjectiond` except ``mode``.
        postprocessing: dictionary transforms applied after the injection (type conversion).
    """
    injection = ShortcutInjectiond(**{**dict(injection), "mode": mode})
    items = injection.select(load_role(datalist, role))
    return Dataset(items, Compose([*preprocessing, injection, *postprocessing]))


def not_possible(datalist: str | Path, role: str, mode: str, injection: Mapping) -> str | None:
    """Why a test set cannot be built from pre-biased data (``injection["artifact"]`` None), or None."""
    if injection.get("artifact") is not None:
        return None
    if mode == "always":
        return "no counterfactual pairs: the bias is baked into the images"
    items = ShortcutInjectiond(**{**dict(injection), "mode": mode}).select(load_role(datalist, role))
    classes = {int(item["label"]) for item in items}
    if classes != {0, 1}:
        group = {"never": "bias-free ", "inverted": "bias-inverted resample of the ", "as_trained": ""}[mode]
        return f"the {group}{role} items hold class(es) {sorted(classes)} only (AUC needs both)"
    return None


class TestSetEvaluation:
    """Evaluate a network on every test set: one evaluator each, then the protocol's numbers.

    For each test set (``{name: {"role", "mode"}}``) it builds ``dataset(role=, mode=)``, wraps it
    in ``dataloader(dataset)`` and runs ``evaluator(val_data_loader=, val_handlers=handlers +
    [writer(filename=...)])``, which writes ``predictions_<name>.csv``. A set whose role is an
    optional one (``test_ood``) absent from the datalist is skipped; for pre-biased data a set
    the data does not allow is recorded in ``test_sets.json`` with the reason.

    Args:
        test_sets: the sets to evaluate; default :func:`pipeline.evaluation.protocol.test_sets`.
        dataset: ``(role=, mode=) -> Dataset`` (a `_mode_: callable` partial of :func:`evaluation_dataset`).
        dataloader: ``(dataset) -> DataLoader``.
        evaluator: ``(val_data_loader=, val_handlers=) -> SupervisedEvaluator``.
        output_dir: the run's ``eval`` folder.
        datalist: the datalist JSON (which roles exist).
        injection: the injection's settings (pre-biased data: ``artifact`` None).
        handlers: handlers of every evaluator (e.g. MONAI's ``CheckpointLoader``).
        writer: ``(filename=) -> handler`` writing a prediction file.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        dataloader: Callable,
        evaluator: Callable,
        output_dir: str | Path,
        datalist: str | Path,
        injection: Mapping,
        test_sets: Mapping[str, Mapping] | None = None,
        handlers: Sequence = (),
        writer: Callable = PredictionWriter,
    ) -> None:
        self.test_sets = dict(test_sets if test_sets is not None else protocol.named_test_sets())
        self.dataset, self.dataloader, self.evaluator, self.writer = dataset, dataloader, evaluator, writer
        self.output_dir, self.datalist, self.injection = Path(output_dir), datalist, injection
        self.handlers = list(handlers)

    def run(self) -> list[dict]:
        """Evaluate every possible test set; write the prediction files, ``test_sets.json`` and
        (:func:`pipeline.evaluation.protocol.write_results`) ``results.json`` and ``metrics.json``.

        Returns:
            The result rows.
        """
        with open(self.datalist) as handle:
            roles = {k for k, v in json.load(handle).items() if isinstance(v, list)}
        evaluated: dict[str, Path] = {}
        skipped: dict[str, str] = {}
        for name, spec in self.test_sets.items():
            role, mode = spec.get("role", "test"), spec.get("mode", "as_trained")
            if role not in roles and role in protocol.OPTIONAL_ROLES:
                continue
            reason = not_possible(self.datalist, role, mode, self.injection)
            if reason:
                skipped[name] = reason
                continue
            path = self.output_dir / prediction_file_name(name)
            loader = self.dataloader(self.dataset(role=role, mode=mode))
            self.evaluator(val_data_loader=loader, val_handlers=[*self.handlers, self.writer(filename=path)]).run()
            evaluated[name] = path
        prebiased = self.injection.get("artifact") is None
        write_json(
            {"prebiased": prebiased, "evaluated": list(evaluated), "not_possible": skipped},
            self.output_dir / protocol.TEST_SETS_JSON,
        )
        return protocol.write_results(self.output_dir, evaluated)
