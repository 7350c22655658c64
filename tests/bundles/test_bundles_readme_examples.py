"""Every example of bundles/README.md holds at its documented size (issue 28, item 4).

Each ``python -m pipeline.bundles`` line goes through the command line with ``--print-only``; the
MONAI command it prints is read back (config files and overrides, as ``monai.bundle run`` would
read them) and its network is built and run on a batch of the configured image size and
channels, with the configured artifact applied to it. The shortcut flags run at 32, 64 and 128
px; the own-network recipe, ``ckpt_export`` and ``verify_metadata`` run as written. Trainings on
the embedded data are not run here (minutes to hours); the workflows' tests train every bundle.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import sys

import pytest
import torch
from fire.parser import DefaultParseValue
from monai.bundle import ConfigParser

from pipeline.bundles import BUNDLES_ROOT
from pipeline.bundles.cli import main
from pipeline.networks import build_network
from pipeline.transforms import build_artifact

REPO = BUNDLES_ROOT.parent
DOC = BUNDLES_ROOT / "README.md"


def doc_lines() -> list[str]:
    """The indented code lines of the README, continuations joined, comments after `  # ` cut."""
    lines, pending = [], ""
    for raw in DOC.read_text().splitlines():
        if not raw.startswith("    ") or not raw.strip():
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(re.sub(r"\s+# .*$", "", line) if not line.startswith("#") else line)
    return lines


def bundle_commands() -> list[str]:
    """The README's `python -m pipeline.bundles` lines (exports: test_bundle_export.py)."""
    return [line for line in doc_lines() if line.startswith("python -m pipeline.bundles ") and " export " not in line]


def printed_command(argv: list[str]) -> list[str]:
    """The `python -m monai.bundle run` command that `python -m pipeline.bundles ARGV` would run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print-only"]) == 0
    return shlex.split(out.getvalue().strip().splitlines()[-1])


def parser_of(command: list[str]) -> ConfigParser:
    """The config a `python -m monai.bundle run` command runs: its files merged, its --key value
    pairs read as MONAI's command line (fire) reads them."""
    run = command.index("run")
    pairs = command[run + 1 :]
    values = {pairs[i][2:]: DefaultParseValue(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    files = values.pop("config_file")
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in (ast.literal_eval(files) if isinstance(files, str) else files)])
    for key in ("meta_file", "logging_file", "config_fingerprint"):
        values.pop(key, None)
    parser.update(values)
    return parser


def check_runs_at_its_size(parser: ConfigParser) -> None:
    """The network and the artifact of the config, on a batch of its image size and channels."""
    size = list(parser.get_parsed_content("image_size"))
    dims, channels = parser.get_parsed_content("spatial_dims"), parser.get_parsed_content("in_channels")
    assert len(size) == dims, f"image_size {size} for spatial_dims {dims}"
    image = 0.5 * torch.rand((channels, *size), generator=torch.Generator().manual_seed(0))
    artifact = parser.get_parsed_content("artifact")
    if artifact is not None:
        marked = torch.as_tensor(build_artifact(artifact)(image.clone()))
        assert marked.shape == image.shape and torch.isfinite(marked).all() and not torch.equal(marked, image)
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        logits = network(image[None])
    assert logits.shape == (1, parser.get_parsed_content("num_classes"))


def test_the_doc_has_the_examples_this_test_runs():
    commands = bundle_commands()
    assert len(commands) >= 12
    assert any("--config mynet.yaml" in c for c in commands) and any("densenet121" in c for c in commands)


@pytest.mark.parametrize("command", [c for c in bundle_commands() if "mynet.yaml" not in c])  # own network: below
def test_each_bundle_command_builds_its_network_at_its_size(command, monkeypatch):
    monkeypatch.chdir(REPO)  # the README's relative config paths are relative to the checkout
    argv = shlex.split(command)[3:]
    check_runs_at_its_size(parser_of(printed_command(argv)))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_the_shortcut_flags_run_at_32_64_and_128_px(size, monkeypatch):
    monkeypatch.chdir(REPO)
    flags = [line for line in doc_lines() if line.startswith("--")]
    assert [f.split()[0] for f in flags] == ["--artifact", "--bias_rates", "--train_bias_mode"]
    argv = ["baseline", "train", *[word for flag in flags for word in shlex.split(flag)], "--image_size", f"[{size}, {size}]"]
    parser = parser_of(printed_command(argv))
    assert parser.get_parsed_content("bias_rates") == [0.1, 0.9]
    assert parser.get("artifact")["text"] == "PORTABLE"
    check_runs_at_its_size(parser)


def test_own_network_recipe_runs(monkeypatch, tmp_path):
    """mynets.py and mynet.yaml as the README writes them (with a builder of stages block1-3)."""
    lines = doc_lines()
    start = lines.index("# mynets.py")
    module = lines[start + 1 : lines.index("# mynet.yaml")]
    config = lines[lines.index("# mynet.yaml") + 1 : lines.index("python -m pipeline.bundles baseline train --config mynet.yaml")]
    builder = (
        "import torch.nn as nn\n"
        "from monai.networks.layers import Conv\n\n"
        "def build_mynet(spatial_dims=2, in_channels=1, num_classes=2):\n"
        "    conv = Conv[Conv.CONV, spatial_dims]\n"
        "    net = nn.Sequential()\n"
        "    for name, (a, b) in {'block1': (in_channels, 32), 'block2': (32, 64), 'block3': (64, 128)}.items():\n"
        "        net.add_module(name, nn.Sequential(conv(a, b, 3, stride=2, padding=1), nn.ReLU()))\n"
        "    net.add_module('pool', nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1))\n"
        "    net.add_module('flat', nn.Flatten())\n"
        "    net.add_module('fc', nn.Linear(128, num_classes))\n"
        "    return net\n\n"
    )
    (tmp_path / "mynets.py").write_text(builder + "\n".join(module) + "\n")
    (tmp_path / "mynet.yaml").write_text("\n".join(config) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        parser = parser_of(printed_command(["baseline", "train", "--config", "mynet.yaml"]))
        assert parser.get_parsed_content("network_name") == "mynet"
        check_runs_at_its_size(parser)
    finally:
        from pipeline.networks import registry

        registry._REGISTRY.pop("mynet", None)
        sys.modules.pop("mynets", None)


def test_ckpt_export_and_verify_metadata_run_as_written(monkeypatch, tmp_path):
    from monai.bundle import ckpt_export, verify_metadata

    commands = [line for line in doc_lines() if line.startswith("python -m monai.bundle ") and "bundles/" in line]
    assert [c.split()[3] for c in commands] == ["run", "ckpt_export", "verify_metadata"]
    run_parser = parser_of(shlex.split(commands[0]))
    check_runs_at_its_size(run_parser)
    # ckpt_export on the weights a baseline train writes (runs/baseline/models/model.pt), from a copy of the checkout's paths
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundles").symlink_to(BUNDLES_ROOT)
    (tmp_path / "runs" / "baseline" / "models").mkdir(parents=True)
    torch.save(build_network("small_cnn", 2, 1, 2).state_dict(), tmp_path / "runs" / "baseline" / "models" / "model.pt")
    for command, function in zip(commands[1:], (ckpt_export, verify_metadata)):
        words = shlex.split(command)[4:]
        kwargs = {words[i][2:]: DefaultParseValue(words[i + 1]) for i in range(0, len(words), 2)}
        function(**kwargs)
    scripted = torch.jit.load(str(tmp_path / "runs" / "baseline" / "models" / "model.ts"))
    assert scripted(torch.zeros(1, 1, 64, 64)).shape == (1, 2)
