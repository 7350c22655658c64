"""The experiment's output folder: a manifest of the files it wrote, and ``--fresh``, which deletes
only those.

The manifest (:data:`MANIFEST`, JSON) lists every file and folder that appeared under the output
folder while the experiment ran, relative to it. The folder is walked without following symbolic
links, so nothing behind a link is ever recorded or deleted; files that were there before the
first run, or that the user adds between runs, are not in it and survive ``--fresh``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.engine.run_lock import LOCK_FILE

MANIFEST = ".shortcut-kd-experiment"
# manifests of earlier versions listed no files: their experiment wrote these folders
LEGACY_FOLDERS = ("report",)


def walk(output: Path) -> tuple[set[str], set[str]]:
    """Files (symbolic links included, not followed) and folders under ``output``, relative to it."""
    files, folders = set(), set()
    for top, dirs, names in os.walk(output, followlinks=False):
        rel = Path(top).relative_to(output)
        for name in dirs:
            (files if os.path.islink(os.path.join(top, name)) else folders).add(str(rel / name))
        files.update(str(rel / name) for name in names)
    return files, folders


def read_manifest(output: Path, scenarios: tuple[str, ...] = ()) -> dict | None:
    """The manifest of ``output`` (None without one); an earlier version's, which listed no
    files, adopts its scenario and report folders' contents."""
    path = output / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete the output folder yourself") from None
    if "files" not in manifest:
        manifest = {
            "written_by": manifest.get("written_by", "pipeline.experiment"),
            "files": [],
            "folders": [],
        }
        for name in (*scenarios, *LEGACY_FOLDERS):
            if (output / name).is_dir() and not (output / name).is_symlink():
                files, folders = walk(output / name)
                manifest["files"] += [f"{name}/{f}" for f in files]
                manifest["folders"] += [name, *(f"{name}/{f}" for f in folders)]
    return manifest


class Recorder:
    """Adds what appears under ``output`` to its manifest (call :meth:`update` after each step)."""

    def __init__(self, output: Path, scenarios: tuple[str, ...] = ()):
        self.output = output
        output.mkdir(parents=True, exist_ok=True)
        self.manifest = read_manifest(output, scenarios) or {
            "written_by": "pipeline.experiment",
            "files": [],
            "folders": [],
        }
        self.before = walk(output)
        self._write()

    def update(self) -> None:
        files, folders = walk(self.output)
        self.manifest["files"] = sorted(set(self.manifest["files"]) | (files - self.before[0]) - {MANIFEST})
        self.manifest["folders"] = sorted(set(self.manifest["folders"]) | (folders - self.before[1]))
        self._write()

    def _write(self) -> None:
        write_json(self.manifest, self.output / MANIFEST)


def _behind_link(output: Path, rel: str) -> Path | None:
    """The first symbolic link on the way from ``output`` to ``rel``'s parent, if any."""
    path = output
    for part in Path(rel).parts[:-1]:
        path = path / part
        if path.is_symlink():
            return path
    return None


def fresh_output(output: Path, scenarios: tuple[str, ...] = ()) -> list[str]:
    """Delete what the experiment wrote into ``output`` (its manifest's files and the folders it
    created, when empty), never following a symbolic link; returns notes on what was left.

    Raises:
        ValueError: ``output`` holds files but no manifest (not an experiment's folder).
    """
    if not output.exists() or not [p for p in output.iterdir() if p.name != LOCK_FILE]:
        return []
    manifest = read_manifest(output, scenarios)
    if manifest is None:
        raise ValueError(
            f"--fresh: {output} is not empty and has no {MANIFEST} marker, so it was not written by the experiment; "
            "refusing to delete it (choose another --output, or empty it yourself)"
        )
    links: set[Path] = set()
    for rel in manifest["files"]:
        link = _behind_link(output, rel)
        if link is not None:
            links.add(link)
            continue
        (output / rel).unlink(missing_ok=True)
    for rel in sorted(manifest["folders"], key=lambda r: -len(Path(r).parts)):
        path = output / rel
        if _behind_link(output, rel) is None and path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:  # holds files the experiment did not write
                pass
    (output / MANIFEST).unlink(missing_ok=True)
    return [
        f"--fresh: {link} is a symbolic link (to {os.readlink(link)}); not followed, what the experiment wrote "
        "behind it is left in place"
        for link in sorted(links)
    ]
