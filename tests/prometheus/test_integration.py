"""A real Prometheus scrapes a short training run; a real Pushgateway receives a short stage's results.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/prometheus/test_integration.py -q
(binaries from Debian: apt-get install prometheus prometheus-pushgateway)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from tiny_training import SHRINK
from unitvox.config import load
from unitvox.errors import Interrupted
from unitvox.prometheus import run_label
from unitvox.stages import run_stage
from unitvox.store import LocalStore
from system_tools import needs

pytestmark = pytest.mark.e2e
STARTUP_SECONDS = 30
QUERY_SECONDS = 30
SCRAPE_JOB = "unitvox-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


@contextmanager
def _server(argv: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """Run a server process until the block ends; fail with its log if it is not ready in time."""
    with log.open("wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                _get(ready_url)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{argv[0]} did not become ready:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture
def prometheus(tmp_path):
    """A Prometheus scraping 127.0.0.1:<port> every second; yields (port to serve on, query function)."""
    binary = shutil.which("prometheus")
    target, listen = _free_port(), _free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": SCRAPE_JOB, "scrape_interval": "1s", "scrape_timeout": "1s",
                                  "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{listen}"]
    api = f"http://127.0.0.1:{listen}"

    def query(expression: str) -> list[dict]:
        answer = json.loads(_get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expression})))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    with _server(argv, f"{api}/-/ready", tmp_path / "prometheus.log"):
        yield target, query


@pytest.fixture
def pushgateway(tmp_path):
    """A Pushgateway on a free local port; yields its URL."""
    binary = shutil.which("prometheus-pushgateway")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Debian's build persists to /var/lib by default; an empty file name keeps this one in memory.
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    with _server(argv, f"{url}/-/ready", tmp_path / "gateway.log"):
        yield url


def _eventually(query, expression: str, count: int) -> list[dict]:
    """The query's result once it has `count` series, within QUERY_SECONDS."""
    deadline = time.monotonic() + QUERY_SECONDS
    while True:
        result = query(expression)
        if len(result) >= count or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


# Training runs until Prometheus has scraped every series the test reads, then stops through the
# real SIGTERM path (a checkpoint, then Interrupted); a step cap bounds it if scraping never happens.
MAX_STEPS = 2000
SCRAPED = {
    "mel": 'unitvox_train_loss{term="mel"}',
    "networks": "unitvox_train_grad_norm",
    "health": 'unitvox_train_health_signal{signal="non_finite"}',
    "info": "unitvox_run_info",
}


def _stop_once_scraped(query, done: threading.Event) -> threading.Thread:
    """A thread that sends this process SIGTERM once the trainer's gauges have all been scraped live."""

    def watch() -> None:
        deadline = time.monotonic() + STARTUP_SECONDS + QUERY_SECONDS * 4
        while not done.wait(0.5) and time.monotonic() < deadline:
            try:
                found = {name: query(expression) for name, expression in SCRAPED.items()}
            except (urllib.error.URLError, ConnectionError):
                continue
            networks = {series["metric"].get("network") for series in found["networks"]}
            if all(found.values()) and networks >= {"generator", "mpd", "mrd"}:
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler sets its stop flag
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@needs("prometheus")
def test_prometheus_scrapes_the_training_gauges_with_run_stage_and_variant(prometheus, tokenized_run, tmp_path):
    port, query = prometheus
    shutil.copytree(tokenized_run, tmp_path / "run")
    store = LocalStore(str(tmp_path / "run"))
    config = load("jobs/demo.yaml", [*SHRINK, f"metrics.port={port}", "metrics.address=127.0.0.1",
                                     "metrics.variant=no_gan", f"train.max_steps={MAX_STEPS}",
                                     "train.generator_warmup_steps=4", "train.health.every_steps=5"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    done = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    watcher = _stop_once_scraped(query, done)
    try:
        with pytest.raises(Interrupted):
            run_stage(config, store, "train")
    finally:
        done.set()
        watcher.join(timeout=10)
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
    labels = {"run": run_label(store.uri), "stage": "train", "variant": "no_gan", "job": SCRAPE_JOB}
    # The endpoint closed with the stage; *_over_time still sees the scraped samples.
    mel = _eventually(query, 'last_over_time(unitvox_train_loss{term="mel"}[10m])', 1)
    assert len(mel) == 1 and labels.items() <= mel[0]["metric"].items(), mel
    networks = _eventually(query, "last_over_time(unitvox_train_grad_norm[10m])", 3)
    assert {series["metric"]["network"] for series in networks} >= {"generator", "mpd", "mrd"}
    health = query('last_over_time(unitvox_train_health_signal{signal="non_finite"}[10m])')
    assert [float(series["value"][1]) for series in health] == [0.0]
    assert query("last_over_time(unitvox_train_health_status[10m])")[0]["metric"]["run"] == labels["run"]
    progress = query('max_over_time(unitvox_stage_items_done{stage="train"}[10m])')
    assert 1 <= float(progress[0]["value"][1]) < MAX_STEPS
    info = query("last_over_time(unitvox_run_info[10m])")
    assert info and info[0]["metric"]["version"] and len(info[0]["metric"]["config_hash"]) == 12


@needs("prometheus-pushgateway")
def test_a_short_stage_pushes_its_progress_and_results_to_the_pushgateway(pushgateway, speech_corpus, tmp_path):
    store = LocalStore(str(tmp_path / "run"))
    config = load("jobs/demo.yaml", [f"prepare.input={speech_corpus}", f"metrics.pushgateway={pushgateway}"])
    assert run_stage(config, store, "prepare").status == "ran"
    groups = json.loads(_get(f"{pushgateway}/api/v1/metrics"))["data"]
    run = run_label(store.uri)
    found = {}
    for group in groups:
        assert group["labels"]["job"] == "unitvox" and group["labels"]["run"] == run
        for name, family in group.items():
            if name.startswith("unitvox_"):
                for sample in family["metrics"]:
                    found[(name, group["labels"]["shard"], sample["labels"].get("outcome"))] = float(sample["value"])
    shards = {shard for (name, shard, _) in found if name == "unitvox_stage_items_done"}
    assert shards == {"0", "1"}, "one group per shard of the segment phase"
    for shard in shards:
        planned = found[("unitvox_stage_items_planned", shard, None)]
        assert found[("unitvox_stage_items_done", shard, None)] == planned > 0
    report = store.read_json("prepare/report.json")
    assert found[("unitvox_prepare_segments", "0", "kept")] == report["segments_kept"]
    assert found[("unitvox_stage_last_success_timestamp_seconds", "0", None)] > time.time() - 600
