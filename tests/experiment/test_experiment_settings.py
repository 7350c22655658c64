"""The experiment's settings, data fingerprint, output folder and errors, checked before anything trains."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.engine.run_lock import LOCK_FILE, OutputInUseError, acquire, release
from pipeline.experiment import METHODS, ExperimentConfig, main, run_settings
from pipeline.experiment.catalogue import CATALOGUE, METHOD_NEEDS
from pipeline.experiment.outputs import MANIFEST, Recorder, fresh_output
from pipeline.experiment.plan import Fingerprints


@pytest.mark.parametrize(
    "setting, closest", [("max_epoch=1", "max_epochs"), ("learning_rat=0.1", "learning_rate")]
)
def test_a_mistyped_set_key_is_an_error_naming_the_closest_id(setting, closest, tmp_path, capsys):
    """Issue 27, row 2: ``--set max_epoch=1`` and ``--set learning_rat=0.1`` were ignored, exit 0."""
    with pytest.raises(SystemExit) as info:
        main(["--output", str(tmp_path), "--methods", "erm", "--set", setting])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"unknown config id '{setting.split('=')[0]}'" in err
    assert f"did you mean '{closest}'" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("setting", ["max_epochs", "=1"])
def test_a_set_without_a_value_or_a_key_is_an_error(setting, tmp_path, capsys):
    """Issue 27, rows 3 and 4 for the experiment: ``--set`` reads one ``key=value`` each, so a
    missing value can neither become True nor shift the settings after it."""
    with pytest.raises(SystemExit) as info:
        main(["--output", str(tmp_path), "--methods", "erm", "--set", setting, "--set", "seed=1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--set expects key=value, got '{setting}'" in err
    assert not any(tmp_path.iterdir())


def test_method_settings_are_checked_against_the_method_and_its_bundle(tmp_path):
    """Issue 27, row 2: ``method_settings: {ermm: ...}`` was ignored."""
    config = tmp_path / "exp.yaml"
    config.write_text("methods: [erm]\nmethod_settings: {ermm: {max_epochs: 1}}\n")
    with pytest.raises(ValueError, match=r"unknown method 'ermm' \(did you mean 'erm'\?\)"):
        ExperimentConfig.load(config)
    with pytest.raises(
        ValueError, match=r"'probe_epochs' \(method_settings of 'erm': not an id of its bundle 'baseline'\)"
    ):
        ExperimentConfig(methods=["erm"], method_settings={"erm": {"probe_epochs": 1}}).validate()
    # an id of any method's bundle is fine for `settings`: one settings block serves every --methods
    ExperimentConfig(methods=["erm"], settings={"probe_epochs": 1}).validate()
    ExperimentConfig(methods=["teacher"], method_settings={"teacher": {"probe_epochs": 1}}).validate()


def test_a_refused_yaml_tag_names_the_config_file(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("methods: [erm]\noutput: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match=rf"experiment config '{config}' line 2: not valid plain YAML .*tags such as !!python are refused"):
        ExperimentConfig.load(config)


def test_every_method_is_one_catalogue_entry_and_upstream_paths_come_from_it(tmp_path):
    assert list(METHODS) == [m.name for m in CATALOGUE] and set(METHOD_NEEDS) == set(METHODS)
    config = ExperimentConfig(output=str(tmp_path), methods=["erm", "jtt", "teacher", "distilled"])
    root = tmp_path.absolute() / "localized2d"
    assert run_settings(config, "localized2d", "jtt")["erm_checkpoint"] == str(
        root / "erm" / "models" / "model.pt"
    )
    distilled = run_settings(config, "localized2d", "distilled")
    assert distilled["teacher_checkpoint"] == str(root / "teacher" / "models" / "teacher.pt")
    # a method gets only the upstream paths it declares
    assert "teacher_checkpoint" not in run_settings(config, "localized2d", "erm")
    assert "erm_checkpoint" not in distilled


def test_the_fingerprint_covers_the_datalist_content_and_its_files(tiny_datalist_2d, tmp_path):
    """Issue 27, rows 6 and 7: ``--resume`` after the datalist's content changed skipped the
    method (the report kept the old test set); after it was deleted, exit 0."""
    datalist = tmp_path / "datalist.json"
    content = json.loads(tiny_datalist_2d.read_text())
    for items in (v for v in content.values() if isinstance(v, list)):
        for item in items:
            item["image"] = str(tiny_datalist_2d.parent / item["image"])
    datalist.write_text(json.dumps(content))
    config = ExperimentConfig(
        output=str(tmp_path / "out"), methods=["erm"], settings={"datalist": str(datalist)}
    )
    before = Fingerprints(config).method("localized2d", "erm")
    assert Fingerprints(config).method("localized2d", "erm") == before
    content["test"] = content["test"][1:]
    datalist.write_text(json.dumps(content))
    changed = Fingerprints(config).method("localized2d", "erm")
    assert changed != before
    image = content["test"][0]["image"]
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))
    assert Fingerprints(config).method("localized2d", "erm") != changed
    datalist.unlink()
    with pytest.raises(ValueError, match=rf"datalist '{datalist}' \(config id 'datalist'\) does not exist"):
        Fingerprints(config).method("localized2d", "erm")


def test_fresh_deletes_only_what_the_manifest_lists(tmp_path):
    """Issue 27, row 5: files that were in the folder before the first run survive ``--fresh``."""
    output = tmp_path / "out"
    (output / "report").mkdir(parents=True)
    (output / "report" / "mine.txt").write_text("mine")
    (output / "thesis.tex").write_text("mine")
    recorder = Recorder(output)
    (output / "localized2d" / "erm" / "eval").mkdir(parents=True)
    (output / "localized2d" / "erm" / "eval" / "metrics.json").write_text("{}")
    (output / "report" / "results.md").write_text("written")
    recorder.update()
    manifest = json.loads((output / MANIFEST).read_text())
    assert manifest["files"] == ["localized2d/erm/eval/metrics.json", "report/results.md"]
    assert fresh_output(output) == []
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == [
        "report",
        "report/mine.txt",
        "thesis.tex",
    ]


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_run_on_the_same_output_stops_with_a_clear_message(tmp_path, capsys):
    """Issue 27, row 8: two experiments with the same output at once: one crashed, the other's
    log was overwritten."""
    other = _sleeper()
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                                      "started": "now", "command": "python -m pipeline.experiment"}))  # fmt: skip
        with pytest.raises(
            OutputInUseError, match=rf"{tmp_path} is in use by another run \(pid {other.pid} on"
        ):
            acquire(tmp_path)
        assert main(["--output", str(tmp_path), "--methods", "erm"]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path} is in use by another" in err and str(other.pid) in err and "Traceback" not in err
    finally:
        other.kill()
        other.wait()
    lock = acquire(tmp_path)  # that run was killed: its lock is stale
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release(lock)
    assert not lock.exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "then"}))
    with pytest.raises(OutputInUseError, match=rf"another host .* delete {tmp_path / LOCK_FILE}"):
        acquire(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_output_is_one_line_naming_the_path(code, tmp_path, capsys, monkeypatch):
    import pipeline.experiment.outputs as outputs

    target = tmp_path / "out" / MANIFEST

    def fail(content, path):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(outputs, "write_json", fail)
    args = [
        "--output",
        str(tmp_path / "out"),
        "--methods",
        "erm",
        "--set",
        "datalist=" + str(tmp_path / "d.json"),
    ]
    (tmp_path / "d.json").write_text(json.dumps({"train": []}))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {target}" in err and os.strerror(code) in err
