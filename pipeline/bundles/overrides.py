"""Config overrides from a command line: one parser for the run and its fingerprint, checked keys.

``--key value`` (or ``--key=value``) pairs override config ids, as on ``python -m monai.bundle
run``. :func:`parse_overrides` reads them once; the run, its resume fingerprint and the MONAI
command line (:func:`monai_arguments`) all come from that one dict, so they cannot disagree.
:func:`check_keys` refuses an id that the merged config does not have, naming the closest one.

What MONAI's own command line (``python -m monai.bundle run``, read by ``fire``) does with values,
and how the project's command line handles it:

- ``--key`` without a value becomes ``True``, and shifts nothing: here it is an error.
- ``--key None`` becomes None, and ``monai.bundle.scripts.update_kwargs`` then *drops* the pair
  (``ignore_none=True``): the config keeps its default. The project passes None as the config
  expression ``'$None'``, which MONAI evaluates to None.
- Bare words become text, not JSON constants: ``--tensorboard false`` is the truthy text
  ``'false'``. The project reads ``true``/``false``/``null`` as JSON (see ``parse_value``) and
  passes MONAI ``True``/``False``.
- ``a,b`` becomes a tuple and ``1`` an int even where text was meant; the project quotes a text
  value whenever ``fire`` would read it as something else.
- An unknown key is silently added to the config (and ignored by it): here it is an error.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

# arguments of ``monai.bundle run`` itself, not config ids (config_file, meta_file and
# logging_file are set by the project's command line)
RUN_ARGUMENTS = ("run_id", "init_id", "final_id", "tracking")


def parse_overrides(extra: Sequence[str]) -> dict[str, Any]:
    """``["--key", "value", "--other=value", ...]`` -> ``{"key": value, ...}``.

    Values are read by :func:`pipeline.bundles.parse_value` (literals, JSON constants, YAML flow
    mappings, else text). A value may start with ``-`` (``--seed -1``) but not with ``--``.

    Raises:
        ValueError: a flag without a value, a token that is not a ``--key``, an empty or repeated
            key, or a value that does not parse (the message names the key).
    """
    from pipeline.bundles import parse_value

    settings: dict[str, Any] = {}
    tokens = list(extra)
    index = 0
    while index < len(tokens):
        token = str(tokens[index])
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"config overrides must be --key value pairs; {token!r} is not a --key")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if index + 1 >= len(tokens) or str(tokens[index + 1]).startswith("--"):
                raise ValueError(f"--{key} has no value (write --{key} VALUE, e.g. --{key} true)")
            value = str(tokens[index + 1])
            index += 1
        index += 1
        if not key:
            raise ValueError(f"config overrides must be --key value pairs; {token!r} has no key")
        if key in settings:
            raise ValueError(f"--{key} is given twice")
        try:
            settings[key] = parse_value(value)
        except ValueError as err:
            raise ValueError(f"--{key}: {err}") from None
    return settings


def parse_setting(text: str) -> tuple[str, Any]:
    """One ``key=value`` setting (``--set`` of the experiment, the audit and the sweeps) as
    ``(key, value)``, the value read by :func:`pipeline.bundles.parse_value`.

    Raises:
        ValueError: no ``=`` or no key, or a value that does not parse (the message names the key).
    """
    from pipeline.bundles import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {text!r}")
    try:
        return key, parse_value(value)
    except ValueError as err:
        raise ValueError(f"--set {key}: {err}") from None


def monai_arguments(settings: Mapping[str, Any]) -> list[str]:
    """``--key text`` arguments that ``python -m monai.bundle run`` (``fire``) reads back as exactly
    ``settings``: None as the expression ``'$None'`` (fire's None would be dropped), a text value
    quoted where fire would read it as a number, tuple or constant."""
    arguments = []
    for key, value in settings.items():
        arguments += [f"--{key}", _fire_text(value)]
    return arguments


def _fire_text(value: Any) -> str:
    from fire.parser import DefaultParseValue

    if value is None:
        return "$None"
    if isinstance(value, str):
        read = DefaultParseValue(value)
        return value if isinstance(read, str) and read == value else repr(value)
    return repr(value)


@lru_cache(maxsize=64)
def _merged_config(files: tuple[str, ...], stamps: tuple[int, ...]) -> dict:
    """``stamps`` (the files' mtimes) only key the cache: an edited file is read again."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(files))
    return parser.get()


def known_id(config: Mapping, key: str) -> bool:
    """True when the config id ``key`` (``a#b#0``) is in ``config``."""
    node: Any = config
    for part in key.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def closest_id(config: Mapping, key: str) -> str | None:
    """The id of ``config`` closest to ``key``: its first part that is not in the config replaced
    by the closest name at that level (difflib), the parts after it kept."""
    parts = key.split("#")
    node: Any = config
    for depth, part in enumerate(parts):
        names = [str(k) for k in node] if isinstance(node, Mapping) else []
        if part in names:
            node = node[part]
            continue
        found = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
        return "#".join([*parts[:depth], found[0], *parts[depth + 1 :]]) if found else None
    return None


def unknown_key_message(key: str, config: Mapping, where: str) -> str:
    """``unknown config id 'max_epoch' (in ...); did you mean 'max_epochs'?``"""
    close = closest_id(config, key)
    hint = f"; did you mean '{close}'?" if close else " (no similar id)"
    return f"unknown config id '{key}' ({where}){hint}"


def check_keys(files: Sequence[str], keys: Iterable[str], where: str = "") -> None:
    """Refuse override ids that the config merged from ``files`` does not have.

    Raises:
        ValueError: names the first unknown id and the closest known one.
    """
    config = merged_config(files)
    for key in keys:
        if key not in RUN_ARGUMENTS and not known_id(config, key):
            raise ValueError(unknown_key_message(key, config, where or "not in the merged bundle config"))


def merged_config(files: Sequence[str]) -> dict:
    """The raw (unparsed) config merged from ``files``, cached per list of files."""
    files = tuple(str(f) for f in files)
    return _merged_config(files, tuple(os.stat(f).st_mtime_ns for f in files))
