"""The export's ``--key value`` settings: the bundle command line's one parser, and every id
checked against the configs the export merges (issue 27, rows 1, 3 and 4 for the export)."""

from __future__ import annotations

import pytest
import yaml

from pipeline.bundles.export import export_bundle, main


@pytest.mark.parametrize(
    "argv, message",
    [(["--max_epoch", "1"], "unknown config id 'max_epoch' (not in the merged configs of baseline); did you mean 'max_epochs'?"),
     (["--max_epochs"], "--max_epochs has no value"),
     (["--tensorboard", "--max_epochs", "1"], "--tensorboard has no value")],
)  # fmt: skip
def test_a_mistyped_id_or_a_flag_without_a_value_is_refused_before_anything_is_written(argv, message, tmp_path, capsys):
    """Before: ``--max_epoch 1`` became a new, unused id of every exported config; a bare flag
    was refused only as an odd number of words, or shifted the pairs after it."""
    out = tmp_path / "exported"
    with pytest.raises(SystemExit) as info:
        main(["baseline", "--out", str(out), *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_id_of_any_exported_workflow_is_accepted(tmp_path):
    """``input_role`` exists only in the inference workflow's config, which the export writes too."""
    out = export_bundle("baseline", tmp_path / "exported", settings={"input_role": "validation", "max_epochs": 2})
    inference = yaml.safe_load((out / "configs" / "inference.yaml").read_text())
    train = yaml.safe_load((out / "configs" / "train.yaml").read_text())
    assert inference["input_role"] == "validation" and train["max_epochs"] == 2
