"""Atomic writes: a reader sees the old file or the new one, never a half-written one."""

import pytest

from pipeline.atomic import write_text


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "table.md"
    write_text("one\n", target)
    write_text("two ΔTPR\n", target)
    assert target.read_text(encoding="utf-8") == "two ΔTPR\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.md"
    write_text("old\n", target)
    with pytest.raises(TypeError):
        write_text(None, target)  # not text: fails inside the temporary file
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]
