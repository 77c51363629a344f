"""The metric catalogue's conventions, the sinks' refusals, the Prometheus sink, and the one place sinks are chosen.

Run: .venv/bin/python -m pytest tests/prometheus/test_sinks.py -q
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

from unitvox.config import load
from unitvox.prometheus import MemorySink, NullSink, open_sink, run_info, run_label
from unitvox.prometheus.catalogue import BASE_LABELS, CATALOGUE, KINDS, PREFIX, UnknownMetric, lookup
from unitvox.prometheus.exporter import PrometheusSink
from unitvox.prometheus.training import series

UNITS = ("", "seconds", "bytes", "ratio")
# Label names besides run, stage and variant; each has a small fixed set of values.
BOUNDED_LABELS = {"shard", "phase", "outcome", "term", "network", "side", "signal", "kind", "audio",
                  "config_hash", "version", "git_commit", "image"}


def test_catalogue_follows_prometheus_naming():
    for name, spec in CATALOGUE.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*[a-z0-9]", name) and not name.startswith(PREFIX), name
        assert spec.exported == PREFIX + name and spec.kind in KINDS and spec.help.endswith("."), name
        assert spec.unit in UNITS, name
        assert name.endswith("_total") == (spec.kind == "counter"), f"{name}: counters and only counters end in _total"
        if spec.unit:
            assert name.endswith(f"_{spec.unit}"), f"{name} must end in its unit {spec.unit}"
        assert not re.search(r"_(milliseconds|ms|percent|kilobytes|megabytes|minutes|hours)(_|$)", name), name
        assert set(spec.labels) <= BOUNDED_LABELS and not set(spec.labels) & set(BASE_LABELS), name
    required = {"run_info", "stage_items_done", "stage_items_planned", "train_loss", "train_health_status",
                "train_health_signal", "train_step", "train_samples_per_second",
                "train_last_checkpoint_timestamp_seconds"}
    assert required <= set(CATALOGUE)


@pytest.mark.parametrize("sink", [NullSink(), MemorySink(), PrometheusSink(run="r", stage="train", variant="base")],
                         ids=["null", "memory", "prometheus"])
def test_every_sink_refuses_what_the_catalogue_does_not_define(sink):
    with pytest.raises(UnknownMetric, match="'train_loss_mel' is not in unitvox.prometheus.catalogue"):
        sink.gauge("train_loss_mel", 1.0)
    with pytest.raises(UnknownMetric, match="takes labels \\['term'\\]"):
        sink.gauge("train_loss", 1.0)
    with pytest.raises(UnknownMetric, match="takes labels"):
        sink.gauge("train_loss", 1.0, term="mel", speaker="p225")
    with pytest.raises(UnknownMetric, match="is a counter in the catalogue, not a gauge"):
        sink.gauge("train_health_checks_total", 1.0)
    sink.gauge("train_loss", 1.0, term="mel", stage="train")  # a call may name a base label
    sink.increment("train_health_checks_total")


def test_training_log_keys_map_to_labelled_metrics():
    assert series("loss/mel") == ("train_loss", {"term": "mel"})
    assert series("disc_fake/mrd") == ("train_discriminator_score", {"network": "mrd", "side": "generated"})
    assert series("grad_norm/speaker_encoder") == ("train_grad_norm", {"network": "speaker_encoder"})
    assert series("mode/output_diversity_ratio") == ("train_output_diversity_ratio", {})
    assert series("validation/improved") is None and series("step") is None
    for key in ("loss/gen_total", "adv_gen/mpd", "feature_matching/mrd", "disc/mpd", "param_norm/mpd", "lr/generator",
                "speaker/similarity", "speed/samples_per_second", "mode/spectral_variance_ratio"):
        name, labels = series(key)
        lookup(name, "gauge", labels)


def test_prometheus_sink_exposition_has_base_labels_help_and_units():
    sink = PrometheusSink(run="exp1-0a1b2c3d", stage="train", variant="no_gan")
    sink.gauge("train_loss", 0.5, term="mel")
    sink.gauge("train_last_checkpoint_timestamp_seconds", 1.7e9)
    sink.increment("train_health_checks_total", 2)
    text = sink.exposition()
    assert 'unitvox_train_loss{run="exp1-0a1b2c3d",stage="train",term="mel",variant="no_gan"} 0.5' in text
    assert "# HELP unitvox_train_loss A training loss term" in text and "# TYPE unitvox_train_loss gauge" in text
    assert "# TYPE unitvox_train_last_checkpoint_timestamp_seconds gauge" in text
    assert 'unitvox_train_health_checks_total{run="exp1-0a1b2c3d",stage="train",variant="no_gan"} 2.0' in text


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_prometheus_sink_serves_metrics_until_closed():
    sink = PrometheusSink(run="r", stage="train", variant="base")
    port = sink.serve(0, "127.0.0.1")
    sink.gauge("train_step", 7)
    assert 'unitvox_train_step{run="r",stage="train",variant="base"} 7.0' in _get(f"http://127.0.0.1:{port}/metrics")
    sink.close()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/metrics")


def test_a_taken_port_leaves_training_without_an_endpoint_not_failed(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sink = PrometheusSink(run="r", stage="train", variant="base")
        assert sink.serve(taken.getsockname()[1], "127.0.0.1") is None
    assert "going on without a metrics endpoint" in caplog.text
    sink.gauge("train_step", 1)
    sink.close()


class _Gateway(http.server.BaseHTTPRequestHandler):
    """Records pushes like a Pushgateway would receive them."""

    received: list[tuple[str, str, str]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_gateway():
    _Gateway.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _Gateway.received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_open_sink_serves_training_and_pushes_short_stages(fake_gateway):
    gateway, received = fake_gateway
    assert isinstance(open_sink(load("jobs/demo.yaml", ["metrics.port=0"]), "r", "train"), NullSink)
    assert isinstance(open_sink(load("jobs/demo.yaml"), "r", "prepare"), NullSink), "no gateway: nothing to push to"
    served = open_sink(load("jobs/demo.yaml", ["metrics.port=0", "metrics.address=127.0.0.1"]), "r", "evaluate")
    assert isinstance(served, NullSink), "port is for training; short stages push"
    config = load("jobs/demo.yaml", [f"metrics.pushgateway={gateway}", "metrics.variant=no_gan",
                                     "metrics.push_interval_seconds=3600"])
    assert isinstance(open_sink(config, "r", "prepare", rank=1), NullSink), "only rank 0 reports"
    sink = open_sink(config, "exp1-0a1b2c3d", "tokenize", shard=3)
    sink.gauge("stage_items_planned", 10, shard="3")
    sink.gauge("stage_items_done", 4, shard="3")
    sink.close()
    assert [method for method, _, _ in received] == ["POST", "POST"], "pushed on the first update and on close"
    _, path, body = received[-1]
    assert path == "/metrics/job/unitvox/run/exp1-0a1b2c3d/shard/3/stage/tokenize"  # the grouping key, sorted
    assert 'unitvox_stage_items_done{run="exp1-0a1b2c3d",shard="3",stage="tokenize",variant="no_gan"} 4.0' in body
    assert 'unitvox_run_info{config_hash="' in body and 'version="' in body


def test_open_sink_for_training_serves_on_the_configured_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = open_sink(load("jobs/demo.yaml", [f"metrics.port={port}", "metrics.address=127.0.0.1"]), "r", "train")
    try:
        assert sink.port == port
        assert 'unitvox_run_info{' in _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        sink.close()


def test_run_info_and_run_label(monkeypatch):
    monkeypatch.setenv("UNITVOX_IMAGE", "registry.example/unitvox:0.1.0")
    info = run_info(load("jobs/demo.yaml"), "train")
    assert info["image"] == "registry.example/unitvox:0.1.0" and len(info["config_hash"]) == 12
    label = run_label("s3://bucket/runs/Exp_1")
    assert re.fullmatch(r"exp-1-[0-9a-f]{8}", label)
    assert run_label("s3://bucket/other/Exp_1") != label, "the hash tells same-named runs apart"
    assert len(run_label("./runs/" + "x" * 200)) <= 63, "a Kubernetes label value"


def test_stages_report_progress_durations_and_results_through_the_sink(prepared_run, tmp_path):
    import shutil

    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    shutil.copytree(prepared_run, tmp_path / "run")
    sink = MemorySink()
    config = load("jobs/demo.yaml", ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000"])
    run_stage(config, LocalStore(str(tmp_path / "run")), "tokenize", metrics=sink)
    total = {labels: value for labels, value in sink.series("stage_items_planned").items()}
    done = sink.series("stage_items_done")
    assert total and done == total, "every assigned shard reports done == total"
    assert sink.get("tokenize_units_used") > 1 and sink.get("tokenize_unit_perplexity") > 1
    phases = {dict(labels)["phase"] for labels in sink.series("stage_duration_seconds")}
    assert phases == {"sample", "fit", "assign", "merge"}
    assert sink.get("stage_last_success_timestamp_seconds") > 0
