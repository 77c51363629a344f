"""The S3 store under injected faults: resets before, in and after headers, delays and 503 SlowDown.

Every test sends its traffic to a `FaultProxy` on 127.0.0.1 in front of the moto server, prints
what it injected, and checks the bytes that came back against what went in.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/store/test_faults.py -q -s
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from faults import FAULT_KINDS, FaultProxy
from unitvox.store import StoreError
from unitvox.store.retry import RetriesExhausted, RetryCounter, RetryPolicy, with_retries
from unitvox.store.s3 import MINIMUM_PART_SIZE, S3Store

PART_SIZE = MINIMUM_PART_SIZE


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoffs, so that many injected faults still make a quick test."""
    monkeypatch.setenv("UNITVOX_STORE_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("UNITVOX_STORE_RETRY_MAX_SECONDS", "0.05")


def _through(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, bucket: str, prefix: str = "faults") -> S3Store:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    return S3Store(f"s3://{bucket}/{prefix}", part_size=PART_SIZE, list_page_size=4)  # listings of several pages


def _payloads() -> dict[str, bytes]:
    generator = random.Random(3)
    return {f"small-{n}.bin": generator.randbytes(generator.randrange(1, 40_000)) for n in range(12)} | {
        "empty.bin": b"", "large.bin": generator.randbytes(2 * PART_SIZE + 12_345)}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_reads_writes_and_downloads_survive_each_fault_kind(kind, s3_environment, s3_bucket, monkeypatch, tmp_path,
                                                            fast_retries):
    payloads = _payloads()
    with FaultProxy(s3_environment, rate=0.3, kinds=(kind,), seed=11, max_faults=60) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket)
        before = store.retry_counts()
        for key, data in payloads.items():
            store.write_bytes(key, data)
        store.upload_file(_write(tmp_path / "upload.bin", payloads["large.bin"]), "uploaded.bin")
        assert list(store.list()) == sorted([*payloads, "uploaded.bin"])
        read = {key: store.read_bytes(key) for key in payloads}
        for key in ("large.bin", "uploaded.bin", "small-0.bin", "empty.bin"):
            store.download_file(key, tmp_path / key)
            assert (tmp_path / key).read_bytes() == payloads.get(key, payloads["large.bin"]), key
        sizes = {key: store.size(key) for key in payloads}
        for key in ("small-1.bin", "small-2.bin"):
            store.delete(key)
        deleted = [store.exists(key) for key in ("small-1.bin", "small-2.bin")]
    retries = _since(before, store.retry_counts())
    print(f"\n{kind}: {proxy.summary()}; store retries {retries}")
    assert read == payloads
    assert sizes == {key: len(data) for key, data in payloads.items()}
    assert deleted == [False, False]
    assert proxy.injected[kind] >= 5, "the proxy must have injected faults of this kind"
    if kind != "delay":
        assert sum(retries.values()) == proxy.injected[kind], "each fault costs one retry, and no more"
    else:
        assert sum(retries.values()) == 0, "a delay is not a failure"
    assert _files(tmp_path) == sorted(["upload.bin", "large.bin", "uploaded.bin", "small-0.bin", "empty.bin"])


def test_a_broken_large_read_resumes_with_a_range_from_where_it_broke(s3_environment, s3_bucket, monkeypatch,
                                                                      fast_retries):
    data = random.Random(5).randbytes(3 * 1024 * 1024)
    S3Store(f"s3://{s3_bucket}").write_bytes("big.bin", data)
    with FaultProxy(s3_environment, rate=1.0, kinds=("reset_mid_body",), seed=2, max_faults=3) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket, prefix="")
        before = store.retry_counts()
        ranges = []
        store.client.meta.events.register(
            "before-call.s3.GetObject", lambda params, **_: ranges.append(params.get("headers", {}).get("Range")))
        assert store.read_bytes("big.bin") == data
    print(f"\n{proxy.summary()}; ranges asked for: {ranges}")
    assert ranges[0] is None and len(ranges) == 4
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in ranges[1:]]
    # How much of a broken body reaches the client before the reset is up to the kernel (a reset can
    # discard what was buffered), so every retry is a ranged request from no earlier than the last.
    assert starts == sorted(starts), "each retry starts where the last body broke"
    assert _since(before, store.retry_counts())["body"] == 3


def test_exhausted_retries_name_the_object_the_tries_and_the_reason(s3_environment, s3_bucket, monkeypatch,
                                                                    fast_retries):
    S3Store(f"s3://{s3_bucket}").write_bytes("doomed.bin", b"x" * 50_000)
    monkeypatch.setenv("UNITVOX_STORE_RETRIES", "2")
    with FaultProxy(s3_environment, rate=1.0, kinds=("reset_mid_body",), seed=1, max_faults=20) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket, prefix="")
        with pytest.raises(RetriesExhausted) as raised:
            store.read_bytes("doomed.bin")
    message = str(raised.value)
    print(f"\n{proxy.summary()}: {message}")
    assert f"s3://{s3_bucket}/doomed.bin: cannot read: gave up after 3 tries" in message
    assert "UNITVOX_STORE_RETRIES=2" in message and "body" in message
    assert proxy.injected["reset_mid_body"] == 3
    with FaultProxy(s3_environment, rate=1.0, kinds=("slowdown",), seed=1, max_faults=20) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket, prefix="")
        before = store.retry_counts()
        with pytest.raises(StoreError, match=r"doomed.bin: cannot read \(SlowDown: Please reduce.*after 3 tries"):
            store.read_bytes("doomed.bin")
    assert proxy.injected["slowdown"] == 3 and _since(before, store.retry_counts())["throttled"] == 2


def test_a_bad_retry_budget_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("UNITVOX_STORE_RETRIES", "lots")
    with pytest.raises(StoreError, match="UNITVOX_STORE_RETRIES='lots': expected a int"):
        RetryPolicy.from_environment()


def test_backoff_grows_exponentially_within_its_cap_and_with_jitter():
    policy = RetryPolicy(retries=5, base_seconds=0.5, max_seconds=3.0)
    random.seed(0)
    waits = [[policy.backoff(n) for _ in range(200)] for n in range(1, 6)]
    assert [max(w) <= cap for w, cap in zip(waits, [0.5, 1.0, 2.0, 3.0, 3.0])] == [True] * 5
    assert len({round(w, 6) for w in waits[2]}) > 100, "jittered, not a fixed wait"
    slept, counter, calls = [], RetryCounter(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "done"

    result = with_retries(flaky, classify=lambda e: "body" if isinstance(e, ConnectionResetError) else None,
                          policy=policy, counter=counter, where="s3://b/k", action="read", sleep=slept.append)
    assert result == "done" and len(slept) == 2 and counter.snapshot()["body"] == 2


KILLED_UPLOAD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from unitvox.store.s3 import S3Store, MINIMUM_PART_SIZE
    store = S3Store(sys.argv[1], part_size=MINIMUM_PART_SIZE)
    marker = Path(sys.argv[3])

    def slow_part(**_):
        marker.write_text("uploading a part")  # the parent kills this process once it sees the marker
        time.sleep(30)

    store.client.meta.events.register("before-call.s3.UploadPart", slow_part)
    store.upload_file(sys.argv[2], "checkpoints/latest.pt")
""")


def test_kill_9_during_a_multipart_upload_leaves_no_object_under_the_final_key(s3_environment, s3_bucket, tmp_path):
    source = _write(tmp_path / "latest.pt", os.urandom(3 * PART_SIZE))
    marker = tmp_path / "marker"
    script = tmp_path / "upload.py"
    script.write_text(KILLED_UPLOAD)
    process = subprocess.Popen([sys.executable, str(script), f"s3://{s3_bucket}/run", str(source), str(marker)],
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the upload never reached its parts"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    store = S3Store(f"s3://{s3_bucket}/run")
    uploads = store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    print(f"\nkilled mid-upload; multipart uploads left open: {[u['Key'] for u in uploads]}")
    assert [u["Key"] for u in uploads] == ["run/checkpoints/latest.pt"], "the kill came mid-upload"
    assert store.size("checkpoints/latest.pt") is None
    assert list(store.list()) == []
    # A rerun uploads the object whole.
    store.upload_file(source, "checkpoints/latest.pt")
    assert hashlib.sha256(store.read_bytes("checkpoints/latest.pt")).digest() == hashlib.sha256(
        source.read_bytes()).digest()


def _since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Retries between two snapshots of the process-wide count."""
    return {kind: count - before.get(kind, 0) for kind, count in after.items()}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# The pipeline under faults ------------------------------------------------------------------

PIPELINE = ("prepare", "tokenize", "train", "evaluate")
SHRUNK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", "train.max_steps=2", "train.generator_warmup_steps=1", "train.checkpoint_every=1",
          "train.validate_every=2", "train.validation_items=3", "train.sample_every=1000", "metrics.port=0",
          "train.speaker.enabled=false", "train.generator.speaker_embedding_dim=0",
          "evaluate.speaker_embedder=mfcc_stats", "evaluate.gates.unit_match_min=null",
          "evaluate.gates.cer_max=null", "evaluate.gates.dnsmos_overall_min=null"]
# Objects that record wall-clock time (timings, steps per second, when a check ran) or hash an
# object that does; they are compared with those fields left out, everything else byte for byte.
_TIMED_FIELDS = {"time", "checked_at", "timings", "store_retries", "checkpoint", "started", "finished", "seconds"}


def _upload_corpus(corpus: Path, bucket: str) -> str:
    raw = S3Store(f"s3://{bucket}/raw")
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        raw.upload_file(path, path.relative_to(corpus).as_posix())
    return raw.uri


def _pipeline(input_uri: str, run_uri: str, metrics=None) -> S3Store:
    from unitvox.config import load
    from unitvox.stages import run_stage

    config = load("jobs/demo.yaml", [f"prepare.input={input_uri}", *SHRUNK])
    store = S3Store(run_uri)
    for stage in PIPELINE:
        assert run_stage(config, store, stage, metrics=metrics).status == "ran", stage
    return store


def _contents(run_uri: str) -> dict[str, bytes]:
    store = S3Store(run_uri)
    return {key: store.read_bytes(key) for key in store.list()}


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items()
                if k not in _TIMED_FIELDS and not str(k).startswith("speed/") and k != "outputs"}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _same_but_for_timing(key: str, one: bytes, other: bytes) -> bool:
    """Whether two differing objects differ only in wall-clock fields."""
    import json

    if key.endswith(".pt"):
        import io

        import torch

        left, right = (torch.load(io.BytesIO(b), weights_only=True) for b in (one, other))
        return _tensors_equal(_without_timing({k: v for k, v in left.items() if k != "log"}),
                              _without_timing({k: v for k, v in right.items() if k != "log"}))
    if key.endswith(".jsonl"):
        rows = [[json.loads(line) for line in b.decode().splitlines() if line.strip()] for b in (one, other)]
        return _without_timing(rows[0]) == _without_timing(rows[1])
    if key.endswith(".json"):
        return _without_timing(json.loads(one)) == _without_timing(json.loads(other))
    return False


def _tensors_equal(left, right) -> bool:
    import torch

    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_tensors_equal(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(_tensors_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, torch.Tensor):
        return torch.equal(left, right)
    return left == right


@pytest.mark.e2e
def test_prepare_tokenize_train_evaluate_into_s3_at_a_quarter_faulted_match_a_clean_run(
        speech_corpus, s3_environment, s3_bucket, monkeypatch, fast_retries, record_property):
    from unitvox.prometheus import MemorySink

    input_uri = _upload_corpus(speech_corpus, s3_bucket)
    _pipeline(input_uri, f"s3://{s3_bucket}/clean")
    sink, before = MemorySink(), S3Store(input_uri).retry_counts()
    with FaultProxy(s3_environment, rate=0.25, seed=25, lifetime_seconds=900) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        faulty = _pipeline(input_uri, f"s3://{s3_bucket}/faulty", metrics=sink)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_environment)
    retries = _since(before, faulty.retry_counts())
    print(f"\npipeline under faults: {proxy.summary()}; store retries {retries}")
    record_property("faults_injected", dict(proxy.injected))
    record_property("store_retries", retries)
    assert proxy.requests > 500 and all(proxy.injected[kind] >= 10 for kind in FAULT_KINDS), proxy.summary()
    assert 0.2 < proxy.total_faults / proxy.requests < 0.3
    assert sum(retries.values()) == proxy.total_faults - proxy.injected["delay"], "one retry per failure"

    clean, under_faults = _contents(f"s3://{s3_bucket}/clean"), _contents(f"s3://{s3_bucket}/faulty")
    assert sorted(under_faults) == sorted(clean)
    identical = [key for key in clean if clean[key] == under_faults[key]]
    differing = [key for key in clean if clean[key] != under_faults[key]]
    assert not [key for key in differing if not _same_but_for_timing(key, clean[key], under_faults[key])]
    print(f"{len(identical)} of {len(clean)} objects byte-identical; {len(differing)} differ only in wall-clock "
          f"fields: {sorted(differing)}")
    assert any(key.startswith("train/checkpoints/") for key in clean) and any(key.endswith(".flac") for key in identical)
    # The retries are in each stage's record and in the Prometheus counter.
    import json

    recorded = [json.loads(under_faults[f"{stage}/_SUCCESS.json"])["store_retries"] for stage in PIPELINE]
    print(f"store_retries in each stage's _SUCCESS.json (this process's so far): {recorded}")
    recorded = [_since(before, counts) for counts in recorded]
    assert 0 < sum(recorded[0].values()) <= sum(recorded[-1].values()) <= sum(retries.values())
    counted = sum(value for (name, _), value in sink.values.items() if name == "store_retries_total")
    assert counted == sum(retries.values()) > 0


def test_a_stage_reports_its_retries_in_its_record_and_as_a_prometheus_counter(s3_environment, s3_bucket, monkeypatch,
                                                                              tmp_path, fast_retries):
    from synth import speech_like, write
    from unitvox.config import load
    from unitvox.prometheus import MemorySink
    from unitvox.stages import run_stage

    for number in range(4):
        write(tmp_path / "raw" / f"spk{number}" / "take.flac", speech_like(2.0, seed=number), 16000)
    sink = MemorySink()
    with FaultProxy(s3_environment, rate=0.3, seed=4, kinds=("reset_mid_body", "slowdown")) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket, prefix="run")
        before = store.retry_counts()
        run_stage(load("jobs/demo.yaml", [f"prepare.input={tmp_path / 'raw'}"]), store, "prepare", metrics=sink)
        total = _since(before, store.retry_counts())
        recorded = _since(before, store.read_json("prepare/_SUCCESS.json")["store_retries"])
    print(f"\n{proxy.summary()}; recorded {recorded}")
    counted = {dict(labels)["kind"]: value for labels, value in sink.series("store_retries_total").items()}
    assert proxy.total_faults >= 5
    assert recorded["throttled"] > 0 and set(recorded) == {"body", "connection", "server", "throttled"}
    assert sum(counted.values()) == sum(total.values()) >= sum(recorded.values()) > 0


def test_a_stage_out_of_retries_names_the_object_and_its_rerun_resumes(s3_environment, s3_bucket, monkeypatch,
                                                                       tmp_path, fast_retries):
    from synth import speech_like, write
    from unitvox.config import load
    from unitvox.stages import run_stage

    for number in range(6):
        write(tmp_path / "raw" / f"spk{number}" / "take.flac", speech_like(2.0, seed=number), 16000)
    config = load("jobs/demo.yaml", [f"prepare.input={tmp_path / 'raw'}"])
    monkeypatch.setenv("UNITVOX_STORE_RETRIES", "0")
    with FaultProxy(s3_environment, rate=1.0, kinds=("reset_mid_body",), after_requests=8, max_faults=1) as proxy:
        store = _through(proxy, monkeypatch, s3_bucket, prefix="run")
        with pytest.raises(StoreError) as raised:
            run_stage(config, store, "prepare")
    message = str(raised.value)
    print(f"\n{proxy.summary()}: {message}")
    assert message.startswith(f"s3://{s3_bucket}/run/") and ("after 1 try" in message or "after up to 1 try" in message)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_environment)
    monkeypatch.delenv("UNITVOX_STORE_RETRIES")
    store = S3Store(f"s3://{s3_bucket}/run")
    written = list(store.list("prepare/records/"))
    assert 0 < len(written) < 6, "the failure came mid-stage"
    rewritten = []
    store.client.meta.events.register("before-call.s3.PutObject", lambda params, **_: rewritten.append(params["url_path"]))
    assert run_stage(config, store, "prepare").status == "ran"
    assert len(list(store.read_jsonl("prepare/manifest.jsonl"))) == 6
    assert not [path for path in rewritten if any(path.endswith(key) for key in written)], \
        "recordings done before the failure are not done again"
    assert len([path for path in rewritten if "/prepare/records/" in path]) == 6 - len(written)
