"""The placement probe's pieces: the moved boxes, the box side, the table's markdown and the docs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks import audit_placement


def test_placements_move_one_axis_or_all_and_keep_the_box_inside():
    moved = audit_placement.placements([8, 16, 20], [10, 10, 10], [32, 32, 32], [-1, 1, 3])
    assert moved[0] == ("none", 0, [8, 16, 20])
    assert ("0", -1, [7, 16, 20]) in moved and ("1", 3, [8, 19, 20]) in moved
    assert ("all", 1, [9, 17, 21]) in moved
    # a box of 10 starting at 23 along the last axis would end at 33 > 32: left out, alone and diagonally
    assert ("2", 3, [8, 16, 23]) not in moved and ("all", 3, [11, 19, 23]) not in moved
    assert ("2", 1, [8, 16, 21]) in moved
    assert len(moved) == 1 + 3 + 3 + 2 + 2


def test_a_box_of_another_size_per_axis_is_kept_inside_along_each_axis():
    # a box 4 long on axis 0 and 10 on axis 1 in a 12 x 12 image: axis 0 may move +6, axis 1 only +2
    moved = audit_placement.placements([2, 0], [4, 10], [12, 12], [3, 6])
    assert ("0", 6, [8, 0]) in moved and ("1", 3, [2, 3]) not in moved and ("all", 3, [5, 3]) not in moved


def test_the_markdown_puts_the_unmoved_flip_rate_in_every_rows_zero_column():
    rows = [
        {"method": "erm", "axis": "none", "offset": 0, "flip_rate": 0.9},
        {"method": "erm", "axis": "0", "offset": -1, "flip_rate": 0.77},
        {"method": "erm", "axis": "0", "offset": 1, "flip_rate": 0.84},
        {"method": "erm", "axis": "2", "offset": -1, "flip_rate": 0.74},
    ]
    text = audit_placement.markdown(pd.DataFrame(rows))
    lines = text.splitlines()
    assert lines[0] == "| model | axis | -1 | 0 | +1 |"
    assert "| erm | 0 | 0.77 | 0.90 | 0.84 |" in lines
    assert "| erm | 2 | 0.74 | 0.90 | - |" in lines


def test_the_docs_table_is_what_markdown_renders_from_the_committed_csv():
    repo = Path(__file__).resolve().parents[2]
    table = audit_placement.markdown(pd.read_csv(repo / "benchmarks" / "results" / "audit_placement.csv"))
    assert "\n".join("  " + line for line in table.splitlines()) in (repo / "docs" / "audit.md").read_text()
