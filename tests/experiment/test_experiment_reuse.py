"""Reusing another experiment's finished trainings: only a finished method with the same fingerprint."""

from __future__ import annotations

import json

from pipeline.experiment import ExperimentConfig
from pipeline.experiment.plan import finished_fingerprint
from pipeline.experiment.reuse import REUSED_FROM, reuse_trainings


def finished(root, method: str, fingerprint: str, done: bool = True, scenario: str = "localized2d"):
    folder = root / scenario / method
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "fingerprint.json").write_text(json.dumps({"fingerprint": fingerprint}))
    if done:
        (folder / "eval" / "metrics.json").write_text("{}")
    (folder / "weights.txt").write_text(f"{root.name} {method}")
    return folder


def test_only_finished_methods_with_the_same_fingerprint_are_copied(tmp_path):
    wanted = {"erm": "e1", "reference": "r1", "teacher": "t1", "source": "s1"}
    a, b = tmp_path / "a", tmp_path / "b"
    finished(a, "erm", "e1")
    finished(a, "reference", "r0")  # other settings
    finished(b, "reference", "r1", done=False)  # interrupted: no metrics
    finished(b, "teacher", "t1")
    (b / "report" / "configs").mkdir(parents=True)
    (b / "report" / "configs" / "localized2d_teacher.yaml").write_text("seed: 3\n")
    target = tmp_path / "target"
    finished(target, "teacher", "t0")  # a stale one is replaced
    finished(target, "source", "s1")  # already up to date: left alone
    config = ExperimentConfig(output=str(target), methods=list(wanted))
    copied = reuse_trainings(config, [a, b, target], lambda scenario, method: wanted[method])
    assert copied == {"localized2d/erm": str(a), "localized2d/teacher": str(b)}
    assert (target / "localized2d" / "erm" / "weights.txt").read_text() == "a erm"
    assert (target / "localized2d" / "teacher" / "weights.txt").read_text() == "b teacher"
    assert json.loads((target / "localized2d" / "teacher" / REUSED_FROM).read_text()) == {"experiment": str(b), "fingerprint": "t1"}
    assert not (target / "localized2d" / "reference").exists()
    # the report's config of a reused method comes with it (where the source has one)
    assert (target / "report" / "configs" / "localized2d_teacher.yaml").read_text() == "seed: 3\n"
    assert not (target / "report" / "configs" / "localized2d_erm.yaml").exists()
    assert not (target / "localized2d" / "source" / REUSED_FROM).exists()
    assert finished_fingerprint(target / "localized2d" / "teacher") == "t1"
    assert not list((target / "localized2d").glob(".*"))  # no partial copy left behind
    # the sources are untouched
    assert (a / "localized2d" / "erm" / "weights.txt").read_text() == "a erm" and not (a / "localized2d" / "erm" / REUSED_FROM).exists()


def test_an_unreadable_fingerprint_counts_as_not_finished(tmp_path):
    folder = finished(tmp_path, "erm", "e1")
    (folder / "eval" / "fingerprint.json").write_text("not json")
    assert finished_fingerprint(folder) is None
    assert finished_fingerprint(tmp_path / "nowhere") is None
