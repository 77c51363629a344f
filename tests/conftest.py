"""Shared fixtures: real or generated speech, prepared runs, and S3 through a moto server.

S3 fixtures: a moto S3 server over real HTTP, the AWS environment pointed at it, fresh buckets.

The server runs in server mode rather than patching botocore in-process, so requests, retries,
timeouts and multipart transfers go through the same HTTP code paths as against AWS or MinIO.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

TEST_REGION = "us-east-1"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "librispeech-mini"
# UNITVOX_TEST_CORPUS=synthetic makes the tests use the synthetic corpus even where ../shared exists,
# so CI also walks the path a fresh clone takes.
CORPUS_CHOICE = os.environ.get("UNITVOX_TEST_CORPUS", "auto")
if CORPUS_CHOICE not in ("auto", "synthetic", "shared"):
    raise pytest.UsageError(f"UNITVOX_TEST_CORPUS={CORPUS_CHOICE!r}: expected auto, synthetic or shared")


def use_shared_corpus() -> bool:
    """True when the tests read ../shared/corpus/librispeech-mini rather than the synthetic corpus."""
    if CORPUS_CHOICE == "shared" and not CORPUS.is_dir():
        raise pytest.UsageError(f"UNITVOX_TEST_CORPUS=shared but {CORPUS} does not exist")
    return CORPUS_CHOICE != "synthetic" and CORPUS.is_dir()


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> Path:
    """The real speech in ../shared/corpus/librispeech-mini, or, in a fresh clone without it (or with
    UNITVOX_TEST_CORPUS=synthetic), the synthetic demo corpus (espeak-ng, several voices)."""
    if use_shared_corpus():
        return CORPUS
    from unitvox.demo import synthesise_corpus

    folder = tmp_path_factory.mktemp("demo-corpus")
    synthesise_corpus(folder, speakers=4, utterances_per_speaker=5)
    return folder


@pytest.fixture(scope="session")
def tokenized_run(prepared_run, tmp_path_factory) -> Path:
    """A run folder where prepare and tokenize (MFCC, k=20) have finished; copy before changing it."""
    import shutil

    from unitvox.config import load
    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    root = tmp_path_factory.mktemp("tokenized") / "run"
    shutil.copytree(prepared_run, root)
    config = load("jobs/demo.yaml", ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000"])
    run_stage(config, LocalStore(str(root)), "tokenize")
    return root


@pytest.fixture(scope="session")
def prepared_run(speech_corpus, tmp_path_factory) -> Path:
    """A run folder where prepare has finished on the speech corpus (demo config); copy before changing it."""
    from unitvox.config import load
    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    root = tmp_path_factory.mktemp("prepared") / "run"
    run_stage(load("jobs/demo.yaml", [f"prepare.input={speech_corpus}"]), LocalStore(str(root)), "prepare")
    return root


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on a free local port, running for the whole session."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_environment(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """Point the AWS environment variables at the moto server with fake credentials.

    Anything from the developer's own AWS setup (profiles, config files, a second endpoint) is
    hidden so that it cannot leak into a test. Returns the endpoint URL.
    """
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_endpoint


@pytest.fixture
def s3_bucket(s3_environment: str) -> str:
    """The name of a new, empty bucket on the moto server (the environment already points there)."""
    bucket = f"unitvox-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_environment, region_name=TEST_REGION).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def fake_kubernetes() -> Iterator[object]:
    """A started `k8s_fake.FakeKubernetes` (a fake API server over real HTTP), stopped afterwards."""
    from k8s_fake import FakeKubernetes

    with FakeKubernetes() as fake:
        yield fake


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that reads the speech corpus (directly or through a run made from it) `corpus`,
    so `.ci/run` can run them again on the synthetic corpus (UNITVOX_TEST_CORPUS=synthetic)."""
    for item in items:
        if "speech_corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)
