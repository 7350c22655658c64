"""`pip install .` (not editable) installs every bundle file: setup.cfg's data_files cover bundles/."""

from __future__ import annotations

import configparser
from pathlib import Path

from pipeline.bundles import _bundles_root

REPO = Path(__file__).resolve().parents[1]


def installed_files() -> dict[str, str]:
    """{repository file: folder it installs to} from setup.cfg's [options.data_files]."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    files = {}
    for target, patterns in config["options.data_files"].items():
        for pattern in patterns.replace("\n", ",").split(","):
            for path in REPO.glob(pattern.strip()):
                files[path.relative_to(REPO).as_posix()] = target
    return files


def test_every_bundle_file_is_installed_at_its_place():
    files = installed_files()
    bundle_files = [p for p in (REPO / "bundles").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in bundle_files:
        name = path.relative_to(REPO).as_posix()
        assert name in files, f"{name} is not installed by setup.cfg [options.data_files]"
        assert files[name] == "share/shortcut-kd/" + path.parent.relative_to(REPO).as_posix()
    assert files["LICENSE"] == "share/shortcut-kd"


def test_an_installed_copy_is_found_where_no_checkout_is(tmp_path, monkeypatch):
    import pipeline.bundles as bundles

    monkeypatch.delenv("SHORTCUT_KD_BUNDLES", raising=False)
    (tmp_path / "share" / "shortcut-kd" / "bundles").mkdir(parents=True)
    monkeypatch.setattr(bundles.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(bundles, "__file__", str(tmp_path / "site-packages" / "pipeline" / "bundles" / "__init__.py"))
    assert _bundles_root() == tmp_path / "share" / "shortcut-kd" / "bundles"
    monkeypatch.setenv("SHORTCUT_KD_BUNDLES", "/somewhere")
    assert _bundles_root() == Path("/somewhere")
