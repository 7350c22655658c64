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


def test_a_write_error_is_found_along_the_causes_and_other_errors_are_not():
    import errno
    import os

    from pipeline.atomic import write_error_message

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/model.pt")
    try:
        try:
            raise full
        except OSError as err:
            raise ValueError("the workflow failed") from err
    except ValueError as wrapped:
        assert write_error_message(wrapped) == "cannot write /out/model.pt: disk full (No space left on device)"
    nameless = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert write_error_message(nameless, "/runs") == "cannot write /runs: read-only file system (Read-only file system)"
    writer = RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0")
    assert write_error_message(writer, "/runs").startswith("a model or checkpoint could not be written in /runs (")
    assert write_error_message(FileNotFoundError(errno.ENOENT, "No such file", "/in.png")) is None
    assert write_error_message(RuntimeError("shape mismatch")) is None
