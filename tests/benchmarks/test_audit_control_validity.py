"""The control-validity probe's pieces: which candidates it examines, the AUC it reads, its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import audit_control_validity as probe

REPO = Path(__file__).resolve().parents[2]


def test_examined_takes_the_top_and_everything_beyond_the_score_up_to_the_cap():
    entries = [{"name": n, "excess_shift": s} for n, s in [("a", 0.1), ("b", 2.0), ("c", 0.6), ("d", 0.2), ("e", 0.9)]]
    entries.append({"name": "no control", "excess_shift": None})
    assert [e["name"] for e in probe.examined(entries, 0.5, 1, 10)] == ["b", "e", "c"]
    assert [e["name"] for e in probe.examined(entries, 0.5, 4, 10)] == ["b", "e", "c", "d"]
    assert [e["name"] for e in probe.examined(entries, 0.5, 1, 2)] == ["b", "e"]
    assert probe.examined(entries, 5.0, 0, 10) == []


def test_ranked_auc_reads_only_the_labelled_images():
    labels = np.array([0, 1, -1, 0, 1, -1])
    scores = np.array([0.1, 0.9, 5.0, 0.2, 0.3, -5.0])
    assert probe.ranked_auc(labels, scores) == pytest.approx(1.0)
    assert probe.ranked_auc(labels, -scores) == pytest.approx(0.0)


def test_the_committed_table_reproduces_each_scans_excess():
    table = pd.read_csv(REPO / "benchmarks" / "results" / "audit_control_validity.csv")
    scale = np.maximum(table.excess_shift_scan.abs(), 0.1)
    assert ((table.excess_shift - table.excess_shift_scan).abs() <= 0.02 * scale).all()


def test_the_docs_table_is_what_markdown_renders_from_the_committed_csv():
    table = probe.markdown(pd.read_csv(REPO / "benchmarks" / "results" / "audit_control_validity.csv"))
    assert "\n".join("  " + line for line in table.splitlines()) in (REPO / "docs" / "audit.md").read_text()


def test_the_docs_table_of_the_fresh_3d_set_is_what_markdown_renders():
    table = probe.markdown(pd.read_csv(REPO / "benchmarks" / "results" / "audit_control_validity_seed3.csv"))
    assert "\n".join("  " + line for line in table.splitlines()) in (REPO / "docs" / "audit.md").read_text()


def test_naming_ranks_each_erm_models_flags_by_excess_and_by_excess_per_displacement():
    rows = [  # (method, candidate, artifact, excess, per displacement)
        ("erm", "noise_std0.1", True, 9.0, 0.8), ("erm", "text@top", False, 2.0, 3.0), ("erm", "blur", False, 0.6, 9.0),
        ("reference", "gamma", False, 5.0, 5.0),
    ]  # fmt: skip
    frame = pd.DataFrame([{"seed": 0, "scenario": "diffuse3d", "method": m, "candidate": c, "is_artifact": a,
                           "excess_shift": e, "excess_per_displacement": r} for m, c, a, e, r in rows])  # fmt: skip
    lines = probe.naming_markdown(frame).splitlines()
    assert len(lines) == 3  # the reference is not an ERM model
    # blur is not a flag (0.6): the top by the ratio is among the flags only
    assert lines[2] == "| 0 | diffuse3d | 2 | `noise_std0.1` (the artifact) | `text@top` | `noise_std0.1` 9.00, 0.80 |"


def test_the_docs_naming_table_is_rendered_from_the_committed_tables():
    tables = [REPO / "benchmarks" / "results" / f for f in ("audit_control_validity.csv", "audit_control_validity_seed3.csv")]
    table = probe.naming_markdown(pd.concat([pd.read_csv(t) for t in tables], ignore_index=True))
    assert "\n".join("  " + line for line in table.splitlines()) in (REPO / "docs" / "audit.md").read_text()
