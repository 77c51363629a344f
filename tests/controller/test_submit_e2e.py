"""`unitvox k8s submit` end to end: a fake API server whose "kubelet" runs each Job's container argv
locally, against S3 over real HTTP (moto), so the controller's real skip, order and exit-code logic run.

Run: .venv/bin/python -m pytest tests/controller/test_submit_e2e.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_fake import FakeKubernetes, fail_job, succeed_job, terminated

from unitvox.cli import main
from unitvox.controller.render import CONFIG_FILE
from unitvox.store import open_store

QUICK = ["train.max_steps=2", "train.generator_warmup_steps=1", "train.batch_size=4", "train.segment_seconds=0.25",
         "evaluate.speaker_embedder=mfcc_stats", "evaluate.max_items=3", "samples.count=1",
         "evaluate.gates.unit_match_min=null", "evaluate.gates.cer_max=null",
         "evaluate.gates.dnsmos_overall_min=null", "bpe.vocab_size=150", "cluster.poll_seconds=0.05"]


class LocalKubelet:
    """Runs every pod of a created Job as a local process with the pod's argv, index and config map."""

    def __init__(self, fake: FakeKubernetes, scratch: Path):
        self.fake, self.scratch = fake, scratch
        fake.on_job_created = self

    def __call__(self, job: dict) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        config_map = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
        folder = self.scratch / config_map
        folder.mkdir(exist_ok=True)
        for file_name, text in self.fake.stored("configmaps", config_map)["data"].items():
            (folder / file_name).write_text(text)
        assert container["command"] == ["/usr/bin/tini", "--", "unitvox"]
        args = [str(folder / "config.yaml") if arg == CONFIG_FILE else arg for arg in container["args"]]
        indexes = range(job["spec"]["completions"]) if job["spec"].get("completionMode") == "Indexed" else [None]
        for index in indexes:
            environment = {**os.environ, "OMP_NUM_THREADS": "1"}
            if index is not None:
                environment["JOB_COMPLETION_INDEX"] = str(index)
            done = subprocess.run([sys.executable, "-m", "unitvox", *args], env=environment, capture_output=True, text=True)
            if done.returncode != 0:
                pod = fail_job(self.fake, name, index=index or 0, pod_status=terminated("Error", done.returncode))
                self.fake.set_log(pod["metadata"]["name"], (done.stdout + done.stderr).splitlines())
                return
        succeed_job(self.fake, name)


def submit(fake: FakeKubernetes, run: str, raw: str, *extra: str, capsys) -> tuple[int, str]:
    argv = ["k8s", "submit", "--config", "jobs/demo.yaml", "--run", run, "--image", "unitvox:test", "--wait",
            "--namespace", "unitvox", "--api-server", fake.url, "--set", f"prepare.input={raw}", *extra]
    for override in QUICK:
        argv += ["--set", override]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.e2e
def test_submit_runs_the_pipeline_as_jobs_skips_it_when_done_and_reports_the_gates(
        speech_corpus, s3_bucket, tmp_path, capsys):
    raw, run = f"s3://{s3_bucket}/raw", f"s3://{s3_bucket}/runs/k8s"
    upload = open_store(raw)
    for path in sorted(p for p in speech_corpus.rglob("*") if p.suffix in (".flac", ".wav"))[:16]:
        upload.upload_file(path, str(path.relative_to(speech_corpus)))

    with FakeKubernetes(namespace="unitvox") as fake:
        LocalKubelet(fake, tmp_path)
        results = tmp_path / "results"
        code, said = submit(fake, run, raw, "--results-dir", str(results), capsys=capsys)
        assert code == 0, said
        keys = set(open_store(run).list())
        assert {f"{stage}/_SUCCESS.json" for stage in ("prepare", "tokenize", "bpe", "train", "evaluate", "samples")} <= keys
        published = {p.name for p in results.iterdir()}
        assert {"junit.xml", "summary.md", "metrics.json"} <= published <= {
            "junit.xml", "summary.md", "metrics.json", "report.html", "audio"}, "the evaluate/ tree, not parts/"
        if "report.html" in published:
            assert (results / "audio").is_dir(), "report.html's audio travels with it"
        first_jobs = len(fake.objects("jobs"))
        assert first_jobs == 11

        code, said = submit(fake, run, raw, capsys=capsys)
        assert code == 0 and said.count("skipped") == 6, said
        assert len(fake.objects("jobs")) == first_jobs, "nothing new was created"

        code, said = submit(fake, run, raw, "--stage", "evaluate", "--set", "evaluate.gates.snr_db_min=100",
                            "--results-dir", str(results), capsys=capsys)
        assert code == 3, said
        assert "quality gates failed" in said and "snr_db" in (results / "summary.md").read_text()

        # A diagnosis runs as its own Job, and again when asked again (its report is never up to date).
        for attempt in range(2):
            code, said = submit(fake, run, raw, "--diagnose", "training", capsys=capsys)
            assert code == 0, said
            assert said.count("created") == 1 and "training: " in said and "healthy at step" in said, said
        assert "complete earlier; deleting it to run again" in said
        assert open_store(run).exists("diagnose/training/report.md")
