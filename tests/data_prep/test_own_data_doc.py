"""docs/own_data.md ("Your own data") runs as written, end to end, on 48 small RGB images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[2] / "docs" / "own_data.md"
REPO = DOC.parents[1]


def doc_commands() -> list[str]:
    """The lines of the doc's ```bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_doc_commands_are_the_ones_this_test_runs():
    commands = doc_commands()
    assert commands[0].startswith("python -m data_prep table") and "monai.bundle run" in commands[-1]
    assert not any("--artifact None" in c for c in commands)  # the default on own data: nothing injected
    assert any("--artifact" in c for c in commands) and any("export baseline" in c for c in commands)


@pytest.mark.slow
def test_own_data_section_runs_end_to_end(tmp_path):
    images = tmp_path / "my_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        label = i % 2
        pixels = rng.integers(40, 120, (40, 40, 3)).astype(np.uint8)
        pixels[12:28, 12:28, 0] += np.uint8(100 * label)  # the finding: a redder centre
        Image.fromarray(pixels).save(images / f"lesion_{i:03d}.png")
        rows.append({"image": f"lesion_{i:03d}.png", "label": label})
    pd.DataFrame(rows).to_csv(images / "labels.csv", index=False)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    for command in doc_commands():
        done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    table = pd.read_csv(tmp_path / "predictions" / "inference" / "predictions.csv", header=None)
    assert len(table) == 48
    plain = json.loads((tmp_path / "runs_own" / "baseline" / "models" / "run_settings.json").read_text())
    assert plain["artifact"] is None and plain["in_channels"] == 3  # own data, no --artifact: nothing injected
    settings = (tmp_path / "runs_tag" / "baseline" / "models" / "run_settings.json").read_text()
    assert '"TextTagArtifact"' in settings.replace("pipeline.transforms.", "") and '"in_channels": 3' in settings
