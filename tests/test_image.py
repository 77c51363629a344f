"""The image, really built and run: the Dockerfile on a CPU base, then stages in it as a pod runs them.

Run: .venv/bin/python -m pytest -m image tests/test_image.py -s   (needs: apt-get install docker.io debootstrap)

No image registry is reachable here, so the base is this machine's Debian release, debootstrapped and
imported with `docker import`. pip inside the build cannot verify the index's TLS proxy, so the
dependencies come from a wheelhouse made on the host with `pip wheel` (the CPU torch among them, and
the wheels of the dependencies that ship only sources), passed in the build context and installed with
--no-index, so the build needs no compiler. The containers run as uid 10001 with a
read-only root, a tmpfs at /scratch and no network, as a pod does.

Between runs the base image, the wheelhouse (under $UNITVOX_IMAGE_CACHE, default
~/.cache/unitvox/image-test) and the built image (tagged with a hash of what goes into it) are kept;
a clean machine builds everything, which takes a few minutes. Timings and the image size are printed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from system_tools import needs

pytestmark = [pytest.mark.e2e, pytest.mark.image, needs("docker"), needs("dockerd"), needs("debootstrap")]

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("UNITVOX_IMAGE_CACHE", Path.home() / ".cache" / "unitvox" / "image-test"))
SOCKET = Path("/var/run/docker.sock")
TORCH = "torch==2.13.0+cpu"  # the CPU build of the torch the project is tested with (pip's find-links has it)
NO_DEPS = ("resemblyzer==0.1.4", "webrtcvad-wheels==2.0.14.post1")  # as the Dockerfile installs them
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
IMAGE_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src", "jobs")
# The demo config shrunk as tests/stages/test_train.py shrinks it.
SHRINK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", "train.log_every=1", "train.validate_every=1000", "train.sample_every=1000",
          "train.validation_items=2"]
RUN_AS = "10001:10001"


def say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal at once, output capture or not (timings, sizes); also kept in CACHE/timings.log."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "timings.log").open("a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled():
        if reporter is not None:
            reporter.write_line(f"[image] {line}")
        else:
            print(f"[image] {line}", file=sys.stderr, flush=True)


def docker_command() -> tuple[list[str], dict[str, str]]:
    """The Docker client and its environment for builds.

    BuildKit (fewer and smaller layers: under vfs every layer is a full copy of the tree) is built into
    Debian's docker.io client; a newer client without the buildx plugin falls back to the classic builder.
    """
    debian_client = Path("/usr/bin/docker")
    if debian_client.exists():
        return [str(debian_client)], {**os.environ, "DOCKER_BUILDKIT": "1"}
    return [shutil.which("docker") or "docker"], {**os.environ, "DOCKER_BUILDKIT": "0"}


def docker(*args: str, timeout: float = 600, check: bool = True, **options) -> subprocess.CompletedProcess:
    client, environment = docker_command()
    result = subprocess.run([*client, *args], capture_output=True, text=True, timeout=timeout, env=environment, **options)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args[:3])} ... failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def daemon_answers() -> bool:
    if not SOCKET.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(2)
            connection.connect(str(SOCKET))
    except OSError:
        return False
    return docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False).returncode == 0


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory) -> Iterator[None]:
    """A Docker daemon: the running one, or dockerd started here (vfs, no iptables, no bridge) and stopped after."""
    if daemon_answers():
        yield
        return
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("w") as output:
        daemon = subprocess.Popen(["dockerd", "--storage-driver=vfs", "--iptables=false", "--bridge=none"],
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not daemon_answers():
            assert daemon.poll() is None, f"dockerd exited ({daemon.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dockerd did not answer within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, timeout=60, check=False).returncode == 0


def os_release() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


@pytest.fixture(scope="session")
def base_image(docker_daemon, request) -> str:
    """This machine's Debian release with Python and pip, debootstrapped and imported (kept between runs)."""
    release = os_release()
    assert release.get("ID") == "debian", f"the test debootstraps Debian; this machine runs {release.get('ID')}"
    tag = f"unitvox-test-base:{release['VERSION_CODENAME']}"
    if image_exists(tag):
        say(request, f"base {tag}: reused")
        return tag
    started = time.monotonic()
    root = CACHE / f"rootfs-{release['VERSION_CODENAME']}"
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    debootstrap = subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                                  release["VERSION_CODENAME"], str(root), "http://deb.debian.org/debian"],
                                 capture_output=True, text=True, timeout=900)
    assert debootstrap.returncode == 0, debootstrap.stdout[-3000:] + debootstrap.stderr[-3000:]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    docker("import", "-", tag, stdin=tar.stdout, timeout=600)
    assert tar.wait() == 0
    shutil.rmtree(root, ignore_errors=True)
    say(request, f"base {tag}: debootstrapped and imported in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="session")
def wheelhouse(request) -> Path:
    """Every wheel the image installs, fetched (or built) on the host, whose pip trusts the index's TLS proxy."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"], TORCH]
    digest = hashlib.sha256("\n".join([*requirements, *NO_DEPS]).encode()).hexdigest()[:12]
    folder = CACHE / f"wheelhouse-{digest}"
    done = folder / ".complete"
    if done.exists():
        say(request, f"wheelhouse {folder}: reused")
        return folder
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    # `pip wheel` keeps the wheels it finds and builds the rest (pesq ships only its source).
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder)]
    for extra in (requirements, ["--no-deps", *NO_DEPS]):
        result = subprocess.run([*pip, *extra], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    done.touch()
    size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
    say(request, f"wheelhouse {folder}: {size:.0f} MiB downloaded in {time.monotonic() - started:.0f} s")
    return folder


def image_inputs() -> list[Path]:
    files = []
    for name in IMAGE_INPUTS:
        path = REPO / name
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in found if "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".egg-info"))]
    return files


@pytest.fixture(scope="session")
def image(base_image, wheelhouse, request, tmp_path_factory) -> str:
    """The image built from the Dockerfile for a CPU test run, tagged with a hash of what goes into it."""
    digest = hashlib.sha256(base_image.encode() + TORCH.encode())
    for path in image_inputs():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    tag = f"unitvox-test:{digest.hexdigest()[:16]}"
    if image_exists(tag):
        say(request, f"image {tag}: reused (Dockerfile, pyproject.toml and src/ unchanged)")
        return tag
    stale = docker("images", "unitvox-test", "--format", "{{.Repository}}:{{.Tag}}", timeout=60).stdout.split()
    for old in stale:  # under vfs an image takes several GB of disk
        docker("rmi", old, timeout=300, check=False)
    context = tmp_path_factory.mktemp("context")
    for path in image_inputs():
        target = context / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copytree(wheelhouse, context / "wheelhouse", copy_function=os.link, ignore=shutil.ignore_patterns(".*"))
    started = time.monotonic()
    docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"TORCH={TORCH}",
           "--build-arg", "PIP_OPTIONS=--no-index", "--build-arg", "BUILD_PACKAGES=", "--tag", tag, str(context),
           timeout=1800)
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag, timeout=60).stdout.strip())
    say(request, f"image {tag}: built in {seconds:.0f} s, {size / 2**20:.0f} MiB")
    return tag


@pytest.fixture(scope="module")
def pod(image, tmp_path_factory) -> Iterator[Pod]:
    """One container of the image, run as a pod runs it, for every test here.

    Under vfs, creating a container copies the whole image (over a minute for this one), so the tests
    share one: its PID 1 is tini, whose child waits for the train test's go and then execs `unitvox
    train`; the other commands run in it with `docker exec`, as the same user, on the same mounts.
    """
    from unitvox.demo import synthesise_corpus

    corpus = tmp_path_factory.mktemp("image-corpus")
    synthesise_corpus(corpus, speakers=2, utterances_per_speaker=3)
    for path in [corpus, *corpus.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the container's uid 10001
    run = tmp_path_factory.mktemp("image-run")
    run.chmod(0o777)  # and writable
    train = ["unitvox", "train", *Pod.options("--set", "train.max_steps=100000", "--set", "train.checkpoint_every=1")]
    waiting = f"until [ -e {Pod.RUN}/{Pod.GO} ]; do sleep 0.2; done; exec {shlex.join(train)}"
    name = f"unitvox-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    docker("run", "--detach", "--name", name, "--user", RUN_AS, "--read-only",
           "--tmpfs", "/scratch:rw,size=2g", "--network", "none", "--env", "OMP_NUM_THREADS=1",
           "--volume", f"{corpus}:{Pod.CORPUS}:ro", "--volume", f"{run}:{Pod.RUN}",
           "--entrypoint", "/usr/bin/tini", image, "--", "sh", "-c", waiting, timeout=600)
    try:
        yield Pod(name, run, time.monotonic() - started)
    finally:
        docker("rm", "--force", name, timeout=300, check=False)


class Pod:
    """The running container: `exec` a command in it; `run` is the host folder mounted as its run root."""

    CORPUS, RUN, GO = "/data/corpus", "/data/run", ".start-training"

    def __init__(self, name: str, run: Path, start_seconds: float):
        self.name, self.run, self.start_seconds = name, run, start_seconds

    @staticmethod
    def options(*extra: str) -> list[str]:
        """The config options every stage here runs with: the demo config, shrunk, on the mounted corpus."""
        argv = ["--config", "jobs/demo.yaml", "--run", Pod.RUN, "--set", f"prepare.input={Pod.CORPUS}", *extra]
        for override in SHRINK:
            argv += ["--set", override]
        return argv

    def exec(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *argv, timeout=timeout, check=False)


def test_unitvox_starts_and_validates_the_shipped_config(pod, request):
    say(request, f"container {pod.name}: created and started in {pod.start_seconds:.0f} s")
    helped = pod.exec("unitvox", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "prepare" in helped.stdout and "tokenize" in helped.stdout
    validated = pod.exec("unitvox", "validate", "--config", "jobs/demo.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    identity = pod.exec("id", "-u")
    assert identity.stdout.strip() == "10001"
    written = pod.exec("touch", "/opt/venv/written")
    assert written.returncode != 0 and "Read-only file system" in written.stderr


@pytest.fixture(scope="module")
def tokenized(pod) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    """prepare, then tokenize, run once in the pod as a pod runs them: each one's result and wall seconds."""
    done = {}
    for stage in ("prepare", "tokenize"):
        started = time.monotonic()
        done[stage] = (pod.exec("unitvox", stage, *Pod.options()), time.monotonic() - started)
        if done[stage][0].returncode:
            break
    return done


def _check_ran(tokenized) -> None:
    for stage in ("prepare", "tokenize"):
        assert stage in tokenized, f"{stage} did not run: the stage before it failed"
        done, _ = tokenized[stage]
        assert done.returncode == 0, f"{stage} in the image:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_prepare_and_tokenize_run_in_the_image_as_a_pod_runs_them(pod, tokenized, request):
    import json

    _check_ran(tokenized)
    for stage, (_, seconds) in tokenized.items():
        say(request, f"{stage} in the image: {seconds:.0f} s")
        success = pod.run / stage / "_SUCCESS.json"
        assert success.is_file(), f"{stage} wrote no _SUCCESS.json"
        assert json.loads(success.read_text())["outputs"], f"{stage}'s _SUCCESS.json lists no outputs"
    written = [path for path in pod.run.rglob("*") if path.is_file()]
    assert written and all(path.stat().st_uid == 10001 for path in written), "the stages ran as uid 10001"


def test_sigterm_to_training_in_the_image_checkpoints_and_exits_143(pod, tokenized, request):
    from unitvox.layout import LATEST_CHECKPOINT
    from unitvox.store import LocalStore
    from unitvox.vocoder import checkpoint

    _check_ran(tokenized)  # training reads the tokenized run
    (pod.run / Pod.GO).touch()  # PID 1's child now execs `unitvox train`
    latest = pod.run / LATEST_CHECKPOINT
    started = time.monotonic()
    while not latest.exists():
        state = docker("inspect", "--format", "{{.State.Running}}", pod.name, timeout=30).stdout.strip()
        assert state == "true", f"training stopped early:\n{docker('logs', pod.name, check=False).stderr[-3000:]}"
        assert time.monotonic() - started < 300, "no checkpoint within 300 s"
        time.sleep(0.5)
    say(request, f"train in the image: first checkpoint after {time.monotonic() - started:.0f} s; sending SIGTERM")
    docker("kill", "--signal", "TERM", pod.name, timeout=30)
    code = docker("wait", pod.name, timeout=300).stdout.strip()
    logs = docker("logs", pod.name, timeout=60, check=False)
    assert code == "143", f"exit code {code}:\n{logs.stderr[-3000:]}"
    assert "interrupted" in logs.stdout + logs.stderr
    step = checkpoint.load(LocalStore(str(pod.run)), LATEST_CHECKPOINT)["counters"]["step"]
    assert step >= 1, "the checkpoint written on SIGTERM holds the steps trained"
