"""``python -m data_prep``: help for every source, generator options reach the generator."""

import errno
import json
import os
import subprocess
import sys

import pytest

from data_prep.cli import build_parser, main


@pytest.mark.parametrize("source", ["synthetic2d", "simba3d", "chexpert", "isic2017", "simba"])
def test_every_source_has_help(source, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([source, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--teacher-size" in text and "--seed" in text


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "data_prep", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "synthetic2d" in result.stdout


def test_synthetic2d_options_reach_the_generator(tmp_path):
    out = tmp_path / "gen"
    code = main(["synthetic2d", "--out", str(out), "--n", "20", "--size", "16", "--teacher-size", "2",
                 "--flavour", "dermoscopy", "--param", "malignancy=0.8", "--ood-size", "4",
                 "--ood-param", "noise_std=0.2", "--seed", "9", "--teacher-from-train", "--no-progress"])
    assert code == 0
    content = json.loads((out / "datalist.json").read_text())
    meta = content["metadata"]
    assert meta["flavour"] == "dermoscopy" and meta["seed"] == 9
    assert meta["parameters"]["domain"]["malignancy"] == 0.8
    assert meta["parameters"]["ood_domain"]["noise_std"] == 0.2 and len(content["test_ood"]) == 4
    assert {i["id"] for i in content["teacher"]} <= {i["id"] for i in content["train"]}


def test_simba3d_ood_options_reach_the_generator(tmp_path):
    out = tmp_path / "gen3d"
    code = main(["simba3d", "--out", str(out), "--n", "8", "--size", "16", "--teacher-size", "1",
                 "--ood-size", "2", "--ood-site", "intensity_gain=0.8", "--no-progress"])
    assert code == 0
    content = json.loads((out / "datalist.json").read_text())
    assert len(content["test_ood"]) == 2
    assert content["metadata"]["parameters"]["ood_effects"]["intensity_gain"] == 0.8


@pytest.mark.parametrize("argv, message", [
    (["--teacher-size", "1.5"], "teacher_size"),
    (["--param", "noflag"], "NAME=VALUE"),
])
def test_bad_option_values_exit_with_usage(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synthetic2d", "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_generator_parameter_is_one_error_line(tmp_path, capsys):
    assert main(["synthetic2d", "--out", str(tmp_path), "--param", "sharpness=2"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown thorax parameter(s) ['sharpness']")


def test_a_size_too_small_to_fill_every_role_is_refused(tmp_path, capsys):
    """Issue 27, row 11: ``--n 3`` exited 0 without teacher and validation roles."""
    out = tmp_path / "gen"
    assert main(["synthetic2d", "--out", str(out), "--n", "3", "--size", "16", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "3 samples are too few to fill every role" in err and "validation" in err and "teacher" in err
    assert err.count("\n") == 1 and not (out / "datalist.json").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_is_one_error_line_and_leaves_the_old_output(code, tmp_path, capsys, monkeypatch):
    """Issue 27: a disk filling up, or a read-only output, gave a raw OSError; data_prep promises
    one-line errors with exit 2. The write fails at the sixth image of a rerun with --overwrite:
    the earlier datalist and images stay as they were, and no staging folder is left."""
    from data_prep import synthetic2d

    out = tmp_path / "gen"
    args = ["synthetic2d", "--out", str(out), "--n", "20", "--size", "16", "--no-progress"]
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    real_write, written = synthetic2d.write_image, []

    def fill_up(array, path, image_format):
        if len(written) == 5:
            raise OSError(code, os.strerror(code), str(path))
        written.append(path)
        real_write(array, path, image_format)

    monkeypatch.setattr(synthetic2d, "write_image", fill_up)
    assert main([*args, "--overwrite", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write ")
    assert f"{out}/.staging-" in err and os.strerror(code) in err and "left as it was before" in err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # nothing half-written, nothing of the new run, no staging folder


def test_a_data_root_that_is_a_file_is_named(tmp_path, monkeypatch):
    """Issue 27: ``SHORTCUT_KD_DATA`` pointing to a file gave FileExistsError deep in ensure_dataset."""
    from data_prep.embedded import ENV_ROOT, ensure_dataset

    root = tmp_path / "data.txt"
    root.write_text("not a folder")
    monkeypatch.setenv(ENV_ROOT, str(root))
    with pytest.raises(ValueError, match=rf"\${ENV_ROOT} '{root}' must be a folder"):
        ensure_dataset("synthetic2d", n=20, size=16, progress=False)
