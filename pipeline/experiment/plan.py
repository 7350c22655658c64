"""What each run of an experiment gets: its config overrides, the data it reads, and the
fingerprints that decide whether ``--resume`` may skip it.

A method's fingerprint covers its bundles' merged configs with the experiment's overrides, the
data it reads (each datalist's content and the size and modification time of every file it
names) and the fingerprints of its upstream methods.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from pipeline.bundles import config_files
from pipeline.engine.resumable_checkpoint import config_fingerprint
from pipeline.experiment.catalogue import METHODS
from pipeline.experiment.config import ExperimentConfig

METHOD_DONE = Path("eval") / "metrics.json"
"""In a method's folder: written last, once its training and evaluation have finished."""
METHOD_FINGERPRINT = Path("eval") / "fingerprint.json"
"""In a method's folder: the :meth:`Fingerprints.method` it was trained with."""


def saved_config(scenario: str, method: str) -> Path:
    """Where in an experiment's folder a method's merged training config is saved (the report's configs)."""
    return Path("report") / "configs" / f"{scenario}_{method}.yaml"


def finished_fingerprint(method_dir: Path) -> str | None:
    """The fingerprint a method folder finished with (None: not finished, or unreadable)."""
    try:
        if not (method_dir / METHOD_DONE).is_file():
            return None
        return json.loads((method_dir / METHOD_FINGERPRINT).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# config ids whose value is a datalist the method reads
DATALIST_IDS = ("datalist", "source_datalist")


def run_settings(config: ExperimentConfig, scenario: str, method: str) -> dict[str, Any]:
    """Config overrides of one bundle run: shared settings, the paths of the upstream models the
    catalogue declares, the method's settings, then the user's for that method."""
    root = Path(config.output).absolute() / scenario
    spec = METHODS[method]
    upstream = {
        u.setting: str(root / u.method / "models" / u.model)
        for u in spec.upstream
        if u.method in config.methods or not u.optional
    }
    return {
        **config.settings,
        "output_root": str(root),
        "bundle_name": method,
        **upstream,
        **spec.settings,
        **config.method_settings.get(method, {}),
    }


def bundle_fingerprints(
    config: ExperimentConfig, scenario: str, method: str, workflows: Sequence[str] = ("train", "evaluate")
) -> dict[str, str]:
    """Config fingerprints of a method's ``workflows``, with the paths inside the output folder
    made relative (a moved or copied experiment keeps them)."""
    spec, settings = METHODS[method], run_settings(config, scenario, method)
    root = str(Path(config.output).absolute())
    settings = {k: v.replace(root, "<output>") if isinstance(v, str) else v for k, v in settings.items()}
    return {
        workflow: config_fingerprint(config_files(spec.bundle, workflow, scenario, spec.overrides), settings)
        for workflow in workflows
    }


def datalists(config: ExperimentConfig, scenario: str, method: str) -> list[Path]:
    """The datalists ``method``'s training reads (:data:`DATALIST_IDS` of its merged config, with
    the experiment's overrides); an embedded dataset is generated here if it is not yet.

    Raises:
        ValueError: a datalist that does not exist, naming the config id and the path.
    """
    from monai.bundle import ConfigParser

    spec = METHODS[method]
    parser = ConfigParser()
    parser.read_config(config_files(spec.bundle, "train", scenario, spec.overrides))
    parser.update(run_settings(config, scenario, method))
    parser.get_parsed_content("imports")
    found = []
    for key in DATALIST_IDS:
        if key not in parser:
            continue
        path = Path(str(parser.get_parsed_content(key)))
        if not path.is_file():
            raise ValueError(f"{scenario} {method}: datalist '{path}' (config id '{key}') does not exist")
        found.append(path)
    return found


def data_fingerprint(datalist: Path) -> str:
    """Hash of a datalist's content and of the size and modification time of every file its
    roles name (a missing file counts as such)."""
    content = datalist.read_bytes()
    digest = hashlib.sha256(content)
    try:
        roles = json.loads(content)
    except ValueError:
        roles = {}
    for role, items in sorted(roles.items()) if isinstance(roles, dict) else []:
        for item in items if isinstance(items, list) else []:
            image = item.get("image") if isinstance(item, dict) else None
            if isinstance(image, str):
                try:
                    info = os.stat(os.path.join(datalist.parent, image))
                    digest.update(f"{role}|{image}|{info.st_size}|{info.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{role}|{image}|missing\n".encode())
    return digest.hexdigest()[:16]


class Fingerprints:
    """The fingerprints of one experiment's runs, each computed once (datalists resolved once)."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self._methods: dict[tuple[str, str], str] = {}
        self._datalists: dict[Path, str] = {}  # each datalist's files are read once per experiment

    def data(self, scenario: str, method: str) -> str:
        """Fingerprint of the data ``method`` reads in ``scenario``."""
        parts = []
        for path in datalists(self.config, scenario, method):
            if path.absolute() not in self._datalists:
                self._datalists[path.absolute()] = data_fingerprint(path)
            parts.append(self._datalists[path.absolute()])
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]

    def method(self, scenario: str, method: str) -> str:
        """Fingerprint of everything that decides a method's results: its bundles' configs with
        the overrides, its data, and the fingerprints of the upstream methods it reads."""
        if (scenario, method) not in self._methods:
            spec, config = METHODS[method], self.config
            parts = [*bundle_fingerprints(config, scenario, method).values(), self.data(scenario, method)]
            upstream = [u.method for u in spec.upstream if u.method in config.methods or not u.optional]
            parts += [self.method(scenario, m) for m in upstream]
            self._methods[scenario, method] = hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]
        return self._methods[scenario, method]

    def analysis(self, scenario: str, method: str, workflow: str) -> str:
        """Fingerprint of an analysis' results: its workflow's configs and the analysed method's fingerprint."""
        parts = [
            bundle_fingerprints(self.config, scenario, method, [workflow])[workflow],
            self.method(scenario, method),
        ]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]
