"""docker/Dockerfile checked without a Docker engine: syntax, build context, entry point, version pins."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.bundles import BUNDLES_ROOT

REPO = BUNDLES_ROOT.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int

    def json_or_words(self) -> list[str]:
        """Exec form (JSON array) as a list, shell form split like a shell would."""
        text = self.arguments.strip()
        return json.loads(text) if text.startswith("[") else shlex.split(text)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined, keywords checked.

    Raises:
        ValueError: an unknown instruction, a continuation at the end of the file, or no FROM
            before the first instruction other than ARG.
    """
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # comment lines (also inside a continued instruction) and blank continuation lines
        if not stripped:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() not in KEYWORDS:
            raise ValueError(f"line {start}: unknown instruction {keyword!r}")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    first = next((i for i in instructions if i.keyword != "ARG"), None)
    if first is None or first.keyword != "FROM":
        raise ValueError(f"the first instruction after the ARGs must be FROM, got {first}")
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    return dict(i.arguments.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.arguments)


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def copy_sources_and_destinations(instructions: list[Instruction]) -> list[tuple[list[str], PurePosixPath]]:
    """(sources, absolute destination) of every COPY/ADD from the build context, WORKDIR applied."""
    workdir, copies = PurePosixPath("/"), []
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.arguments
        elif instruction.keyword in ("COPY", "ADD"):
            words = instruction.json_or_words()
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            copies.append((words[:-1], workdir / words[-1]))
    return copies


def dockerignore_keeps(path: str, patterns: list[str]) -> bool:
    """True when ``path`` (or a folder above it) is not excluded by the ``.dockerignore`` patterns."""
    keep = True
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            keep = negated
    return keep


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _setup_requirements() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    return {Requirement(line).name: Requirement(line) for line in lines}


def test_parser_joins_continuations_and_rejects_unknown_instructions():
    text = "ARG V=1\nFROM base:${V}\n# note\nRUN a \\\n    # inside\n    && b\nENV A=1 \\\n    B=2\n"
    parsed = parse_dockerfile(text)
    assert [(i.keyword, i.line) for i in parsed] == [("ARG", 1), ("FROM", 2), ("RUN", 4), ("ENV", 7)]
    assert parsed[2].arguments == "a && b"
    with pytest.raises(ValueError, match="line 2: unknown instruction 'COPPY'"):
        parse_dockerfile("FROM base\nCOPPY a b\n")
    with pytest.raises(ValueError, match="continued instruction"):
        parse_dockerfile("FROM base\nRUN a \\\n")
    with pytest.raises(ValueError, match="must be FROM"):
        parse_dockerfile("RUN a\nFROM base\n")


def test_dockerfile_parses_to_one_cuda_pytorch_stage(instructions):
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) == 1
    image = expand(stages[0].arguments, arg_defaults(instructions))
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", image), image


def test_copy_sources_exist_and_are_in_the_build_context(instructions):
    patterns = [
        line.strip()
        for line in (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [s for sources, _ in copy_sources_and_destinations(instructions) for s in sources]
    assert {"pipeline", "data_prep", "bundles", "setup.cfg"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} is not in the repository"
        assert dockerignore_keeps(source, patterns), (
            f"COPY source {source} is excluded by Dockerfile.dockerignore"
        )
    assert not dockerignore_keeps(".venv", patterns) and not dockerignore_keeps(
        "pipeline/__pycache__", patterns
    )


def test_entrypoint_script_is_copied_and_runs_outside_docker(instructions):
    entrypoint = [i for i in instructions if i.keyword == "ENTRYPOINT"][-1].json_or_words()
    assert entrypoint[0] == "python"
    script = PurePosixPath(entrypoint[-1])
    copied = {
        str(destination): sources for sources, destination in copy_sources_and_destinations(instructions)
    }
    assert str(script) in copied, f"ENTRYPOINT {script} is not a COPY destination"
    local = REPO / copied[str(script)][0]
    assert local.is_file()
    cmd = [i for i in instructions if i.keyword == "CMD"][-1].json_or_words()
    result = subprocess.run([sys.executable, str(local), *cmd], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "multi-gpu" in result.stdout and "data_prep" in result.stdout
    result = subprocess.run(
        [sys.executable, str(local), "--print-only", "bundle", "baseline", "train"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout)[1:5] == ["-m", "pipeline.bundles", "baseline", "train"]


def test_pinned_versions_match_setup_cfg(instructions):
    variables = arg_defaults(instructions)
    image = expand([i for i in instructions if i.keyword == "FROM"][0].arguments, variables)
    torch_version = Version(image.split(":")[1].split("-")[0])
    monai_version = Version(variables["MONAI_VERSION"])
    requirements = _setup_requirements()
    assert requirements["torch"].specifier.contains(torch_version), (torch_version, requirements["torch"])
    assert requirements["monai"].specifier.contains(monai_version), (monai_version, requirements["monai"])
    run = " ".join(expand(i.arguments, variables) for i in instructions if i.keyword == "RUN")
    assert f"torch=={torch_version}" in run, "pip must keep the base image's torch"
    assert f'"monai[ignite]=={monai_version}"' in run
    assert '".[tracking]"' in run
    if Version(metadata.version("monai")) == monai_version:  # the pinned MONAI's own torch requirement
        needs = [Requirement(r) for r in metadata.requires("monai") if Requirement(r).name == "torch"]
        needs = [r for r in needs if r.marker is None]
        assert all(r.specifier.contains(torch_version) for r in needs), needs


def test_runtime_user_volumes_and_roots(instructions):
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    environment = {}
    for instruction in (i for i in instructions if i.keyword == "ENV"):
        environment.update(word.split("=", 1) for word in shlex.split(instruction.arguments))
    assert environment["SHORTCUT_KD_DATA"] == "/data"
    assert environment["SHORTCUT_KD_OUTPUTS"] == "/outputs"
    volumes = [v for i in instructions if i.keyword == "VOLUME" for v in i.json_or_words()]
    assert {"/data", "/outputs"} <= set(volumes)
    copied = {
        sources[0]: str(destination) for sources, destination in copy_sources_and_destinations(instructions)
    }
    assert environment["SHORTCUT_KD_BUNDLES"] == copied["bundles"]  # pip installs the package, not bundles/


def test_setup_cfg_data_files_are_in_the_image_before_pip_installs_it(instructions):
    """`pip install .` copies setup.cfg's data_files (LICENSE, the bundles): a file named there
    that is not yet in the image fails the build ("can't copy 'LICENSE': doesn't exist")."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    sources = {
        pattern.strip().split("/")[0]
        for patterns in config["options.data_files"].values()
        for pattern in patterns.replace("\n", ",").split(",")
        if pattern.strip()
    }
    assert {"LICENSE", "bundles"} <= sources
    install = next(n for n, i in enumerate(instructions) if i.keyword == "RUN" and "pip install" in i.arguments)
    copied_before = set()
    workdir = PurePosixPath("/")
    for instruction in instructions[:install]:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.arguments
        elif instruction.keyword == "COPY":
            words = [w for w in instruction.json_or_words() if not w.startswith("--")]
            copied_before |= {s for s in words[:-1] if (workdir / words[-1]).parent == workdir or words[-1] in ("./", ".")}
    assert workdir == PurePosixPath("/opt/shortcut-kd")
    missing = sources - copied_before
    assert not missing, f"setup.cfg's data_files {sorted(missing)} are copied after `pip install` (or not at all)"
