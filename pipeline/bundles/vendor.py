"""The project's code an exported bundle needs, shipped inside it the model-zoo way (``scripts/``).

An exported config refers to this project's modules (``$pipeline.networks.build_network(...)``,
``_target_: pipeline.engine.image_io.load_image``). :func:`ship_code` copies exactly the modules
those references reach (their import closure) into ``<bundle>/scripts/``, renamed under the
package ``scripts`` (``scripts.pipeline``, ``scripts.data_prep``), and :func:`rewrite_config`
points the config at them: ``$import scripts.pipeline as pipeline``, ``_target_:
scripts.pipeline...``. The bundle then runs where this project is not installed (MONAI puts the
bundle folder on ``sys.path``, as model-zoo's ``verify_bundle.py`` does), and a user's own
``pipeline.py`` or ``data_prep`` cannot shadow it. :func:`third_party_requirements` lists the
distributions the shipped code imports, for ``metadata.json``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text

CODE_PACKAGE = "scripts"
PROJECT_PACKAGES = ("pipeline", "data_prep")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# a dotted name that starts with one of the project's packages (in config strings and source)
_DOTTED = re.compile(r"(?<![\w.])((?:pipeline|data_prep)(?:\.\w+)*)")
_IMPORT = re.compile(r"^\$import\s+((?:pipeline|data_prep)(?:\.\w+)*)\s*$")
_FROM_LINE = re.compile(r"^(\s*)from\s+(pipeline|data_prep)\b", re.MULTILINE)
_IMPORT_LINE = re.compile(r"^\s*import\s+(?:pipeline|data_prep)\b.*$", re.MULTILINE)
_STRING = re.compile(r"""(["'])((?:pipeline|data_prep)(?:\.\w+)*)\1""")
# these have their own metadata.json keys (pytorch_version, monai_version, numpy_version)
OWN_KEYS = {"torch", "monai", "numpy"}
IMPORT_KEYS = ("imports", "+imports")  # a fragment merged after another has "+imports"
SCRIPTS_INIT = '''"""Code of the shortcut-kd project that this bundle's configs call, shipped with it.

Imported as ``scripts.pipeline`` and ``scripts.data_prep`` (the configs bind ``pipeline`` and
``data_prep`` to them), so a ``pipeline.py`` of your own does not shadow it. Written by
``python -m pipeline.bundles export``; do not edit (re-export instead).
"""
'''


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of the project module ``name`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _longest_module(dotted: str, root: Path) -> str | None:
    """The longest prefix of ``dotted`` (``pipeline.networks.build_network``) that is a module."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if module_file(name, root) is not None:
            return name
    return None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def config_modules(config: Mapping, root: Path = PROJECT_ROOT) -> set[str]:
    """Project modules that ``config``'s expressions and ``_target_`` values use (its ``$import``
    lines left aside: an import that nothing uses is dropped by :func:`rewrite_config`)."""
    used = set()
    for text in _strings({k: v for k, v in config.items() if k not in IMPORT_KEYS}):
        for dotted in _DOTTED.findall(text):
            name = _longest_module(dotted, root)
            if name is not None:
                used.add(name)
    return used


def _imported_names(path: Path, module: str) -> tuple[set[str], set[str]]:
    """(project modules, top-level third-party names) that the source of ``module`` imports,
    function-level imports and ``importlib.import_module("pipeline....")`` strings included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    project, third = set(), set()

    def add(name: str) -> None:
        top = name.split(".")[0]
        if top in PROJECT_PACKAGES:
            project.add(name)
        elif top != "__future__":
            third.add(top)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            add(base)
            for alias in node.names:  # `from pipeline import networks`: a module too
                if base.split(".")[0] in PROJECT_PACKAGES:
                    project.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _STRING.fullmatch(repr(node.value)):
            project.add(node.value)
    return project, third


def import_closure(modules: Iterable[str], root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every project module that ``modules`` reach by importing, their parent packages included:
    ``{module name: source file}``."""
    found: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = _longest_module(todo.pop(), root)
        if name is None or name in found:
            continue
        found[name] = module_file(name, root)
        parts = name.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]
        todo += sorted(_imported_names(found[name], name)[0])
    return dict(sorted(found.items()))


def rewrite_source(text: str, where: str = "source") -> str:
    """Module source with its project imports moved under :data:`CODE_PACKAGE`.

    Raises:
        ValueError: an ``import pipeline...`` statement (it binds the top-level name, which a
            rename cannot keep); the project writes ``from pipeline... import ...``.
    """
    plain = _IMPORT_LINE.search(text)
    if plain:
        raise ValueError(f"{where}: `{plain.group(0).strip()}` cannot be shipped; use `from ... import ...`")
    text = _FROM_LINE.sub(rf"\1from {CODE_PACKAGE}.\2", text)
    return _STRING.sub(rf"\1{CODE_PACKAGE}.\2\1", text)


def rewrite_config(config: Mapping, root: Path = PROJECT_ROOT) -> dict:
    """``config`` pointed at the shipped code: ``pipeline``/``data_prep`` bound to
    ``scripts.pipeline``/``scripts.data_prep``, ``_target_`` paths prefixed, and the project
    imports that nothing in the config uses left out."""
    used = config_modules(config, root)
    rewritten = {}
    for key in IMPORT_KEYS:
        if key in config:
            rewritten[key] = _rewrite_imports(config[key], used)

    def target(value: Any, key: str | None = None) -> Any:
        if isinstance(value, Mapping):
            return {k: target(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [target(v) for v in value]
        if key == "_target_" and isinstance(value, str) and value.split(".")[0] in PROJECT_PACKAGES:
            return f"{CODE_PACKAGE}.{value}"
        return value

    rewritten.update({k: target(v) for k, v in config.items() if k not in IMPORT_KEYS})
    return rewritten


def _rewrite_imports(lines: list, used: set[str]) -> list:
    """An ``imports`` list pointed at the shipped code, project imports that nothing uses left out."""
    imports = []
    for line in lines:
        match = _IMPORT.match(str(line))
        if not match:
            imports.append(line)
            continue
        name = match.group(1)
        if any(u == name or u.startswith(name + ".") for u in used):
            imports.append(
                f"$import {CODE_PACKAGE}.{name} as {name}" if "." not in name else f"$import {CODE_PACKAGE}.{name}"
            )
    for package in PROJECT_PACKAGES:  # the bound names must exist wherever a submodule is used
        bound = f"$import {CODE_PACKAGE}.{package} as {package}"
        if any(u.split(".")[0] == package for u in used) and bound not in imports:
            imports.insert(0, bound)
    return imports


def ship_code(configs: Iterable[Mapping], out: str | Path, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Copy the modules that ``configs`` (as exported, before :func:`rewrite_config`) reach into
    ``out/scripts/``, rewritten by :func:`rewrite_source`; returns ``{module: shipped file}``."""
    used: set[str] = set()
    for config in configs:
        used |= config_modules(config, root)
    scripts = Path(out) / CODE_PACKAGE
    scripts.mkdir(parents=True, exist_ok=True)
    write_text(SCRIPTS_INIT, scripts / "__init__.py")
    shipped = {}
    for name, source in import_closure(used, root).items():
        target = scripts / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(rewrite_source(source.read_text(), str(source)), target)
        shipped[name] = target
    return shipped


def third_party_requirements(files: Iterable[Path], modules: Iterable[str]) -> dict[str, str]:
    """``{distribution: installed version}`` of every third-party package the shipped ``files``
    (the sources of ``modules``) import, less the standard library and torch, monai and numpy.

    Raises:
        ValueError: an imported package that no installed distribution provides.
    """
    names: set[str] = set()
    for path, module in zip(files, modules):
        names |= _imported_names(Path(path), module)[1]
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
    providers = package_metadata.packages_distributions()
    versions = {}
    for name in sorted(names - stdlib - OWN_KEYS - {CODE_PACKAGE}):
        dists = providers.get(name)
        if not dists:
            raise ValueError(f"the shipped code imports '{name}', which no installed distribution provides")
        dist = dists[0]
        if dist.lower() in OWN_KEYS:
            continue
        versions[re.sub(r"[-_.]+", "-", dist).lower()] = package_metadata.version(dist)  # PEP 503 name
    return versions
