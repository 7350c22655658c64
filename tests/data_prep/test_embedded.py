"""ensure_dataset: generate once, reuse, survive a concurrent generator, repair incomplete folders."""

import json
import os

import pytest

from data_prep import embedded, simba3d, synthetic2d

PARAMS = dict(n=20, size=16, teacher_size=2)


def test_generates_once_then_reuses(tmp_path, monkeypatch):
    path = embedded.ensure_dataset("synthetic2d", root=tmp_path, progress=False, **PARAMS)
    assert path.name == "datalist.json" and path.parent.parent == tmp_path
    assert path.parent.name.startswith("synthetic2d-")
    stamp = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(synthetic2d, "generate", fail)
    assert embedded.ensure_dataset("synthetic2d", root=tmp_path, **PARAMS) == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]  # no temporary folders left


def test_folder_depends_on_content_parameters_only(tmp_path, monkeypatch):
    folder = embedded.dataset_folder("synthetic2d", tmp_path, **PARAMS)
    assert folder == embedded.dataset_folder("synthetic2d", tmp_path, n=20, size=16, teacher_size=2, flavour="thorax")
    assert folder == embedded.dataset_folder("synthetic2d", tmp_path, workers=2, **PARAMS)
    assert folder != embedded.dataset_folder("synthetic2d", tmp_path, **{**PARAMS, "seed": 1})
    # generator parameters are resolved with their defaults: explicit default == implicit
    assert folder == embedded.dataset_folder("synthetic2d", tmp_path, opacity_amplitude=0.06, **PARAMS)
    assert folder != embedded.dataset_folder("synthetic2d", tmp_path, opacity_amplitude=0.05, **PARAMS)
    volumes = embedded.dataset_folder("simba3d", tmp_path, n=8)
    assert volumes == embedded.dataset_folder("simba3d", tmp_path, n=8, noise_std=0.03)
    assert volumes != embedded.dataset_folder("simba3d", tmp_path, n=8, noise_std=0.05)
    monkeypatch.setenv(embedded.ENV_ROOT, str(tmp_path / "env"))
    assert embedded.dataset_folder("simba3d").parent == tmp_path / "env"


def test_folder_follows_the_default_ood_site(tmp_path, monkeypatch):
    """A changed default OOD site is new content: a new folder, not the cached one."""
    ood2d = embedded.dataset_folder("synthetic2d", tmp_path, ood_size=10, **PARAMS)
    ood3d = embedded.dataset_folder("simba3d", tmp_path, n=8, ood_size=4)
    assert embedded.dataset_folder("synthetic2d", tmp_path, **PARAMS) != ood2d
    monkeypatch.setitem(synthetic2d.OOD_SHIFT, "thorax", {"noise_std": 3.0})
    monkeypatch.setattr(simba3d, "DEFAULT_OOD_SITE", {"noise_std": 0.2})
    assert embedded.dataset_folder("synthetic2d", tmp_path, ood_size=10, **PARAMS) != ood2d
    assert embedded.dataset_folder("simba3d", tmp_path, n=8, ood_size=4) != ood3d
    # without an OOD role the site does not matter
    assert embedded.dataset_folder("simba3d", tmp_path, n=8) == embedded.dataset_folder("simba3d", tmp_path, n=8, ood_site={"noise_std": 0.2})


def test_concurrent_winner_is_used(tmp_path, monkeypatch):
    """Another process finishes first while this one generates: its folder is kept and returned."""
    final = embedded.dataset_folder("synthetic2d", tmp_path, **PARAMS)
    real_generate = synthetic2d.generate

    def racing_generate(out_dir, **kwargs):
        real_generate(final, **kwargs)  # the other process wins the race
        (final / "winner").write_text("1")
        return real_generate(out_dir, **kwargs)

    monkeypatch.setattr(synthetic2d, "generate", racing_generate)
    path = embedded.ensure_dataset("synthetic2d", root=tmp_path, progress=False, **PARAMS)
    assert path == final / "datalist.json" and (final / "winner").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_incomplete_folder_is_regenerated(tmp_path):
    path = embedded.ensure_dataset("synthetic2d", root=tmp_path, progress=False, **PARAMS)
    first = json.loads(path.read_text())["train"][0]["image"]
    os.remove(path.parent / first)
    assert not embedded.is_complete(path.parent)
    path = embedded.ensure_dataset("synthetic2d", root=tmp_path, progress=False, **PARAMS)
    assert embedded.is_complete(path.parent) and (path.parent / first).is_file()


@pytest.mark.parametrize("name, params, match", [
    ("mnist", {}, "embedded dataset name"),
    ("synthetic2d", {"colour": 1}, "colour"),
    ("simba3d", {"n": 10, "flavour": "thorax"}, "flavour"),
])
def test_bad_requests_raise(tmp_path, name, params, match):
    with pytest.raises(ValueError, match=match):
        embedded.ensure_dataset(name, root=tmp_path, **params)
