"""The controller against a fake Kubernetes API over real HTTP: order, skip, adopt, wait, failures, cancel, detach.

Run: .venv/bin/python -m pytest tests/controller/test_submit.py
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from k8s_fake import FakeKubernetes, fail_job, succeed_job, terminated, unschedulable, waiting

from unitvox.cli import main
from unitvox.config import load
from unitvox.controller.cluster import KubeCluster
from unitvox.controller.render import Target, render_stage
from unitvox.controller.submit import Controller, SubmitFailed
from unitvox.store import open_store

RUN = "s3://bucket/runs/exp1"
IMAGE = "registry.example/unitvox:0.1.0"
LAST_PHASE = {"prepare": "merge", "tokenize": "merge", "bpe": "train", "train": "fit", "evaluate": "merge"}


@pytest.fixture
def fake():
    with FakeKubernetes(namespace="unitvox") as server:
        yield server


def make_target(*overrides, **options) -> Target:
    config = load("jobs/demo.yaml", ["prepare.input=s3://bucket/raw", "cluster.poll_seconds=0.01", *overrides])
    return Target(config, RUN, IMAGE, **options)


class Simulation:
    """The cluster side of a run: Jobs complete when created, and a stage is done after its last phase."""

    def __init__(self, fake: FakeKubernetes, done: set[str] | None = None):
        self.fake, self.done = fake, set(done or ())
        fake.on_job_created = self.created

    def created(self, job: dict) -> None:
        succeed_job(self.fake, job["metadata"]["name"])
        labels = job["metadata"]["labels"]
        if LAST_PHASE.get(labels["unitvox.dev/stage"]) == labels["unitvox.dev/phase"]:
            self.done.add(labels["unitvox.dev/stage"])

    def pending(self, stage: str) -> str | None:
        return None if stage in self.done else "not run yet"


def controller(fake, target, simulation=None, **options) -> tuple[Controller, list[str]]:
    said: list[str] = []
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    pending = simulation.pending if simulation else (lambda stage: "not run yet")
    return Controller(cluster, target, open_store("/nonexistent-unused"), echo=said.append,
                      pending_reason=pending, **options), said


def created(fake, plural="jobs") -> list[str]:
    return [r.body["metadata"]["name"] for r in fake.requests if r.method == "POST" and r.path.endswith(f"/{plural}")]


def test_stages_are_created_in_order_and_finished_ones_skipped(fake):
    simulation = Simulation(fake, done={"prepare"})
    target = make_target()
    run, said = controller(fake, target, simulation)
    outcomes = run.submit(["prepare", "tokenize", "bpe"])
    assert [o.status for o in outcomes] == ["skipped", "done", "done"]
    expected = [job["metadata"]["name"] for stage in ("tokenize", "bpe") for job in render_stage(target, stage)]
    assert created(fake) == expected
    assert len(created(fake, "configmaps")) == 1
    posted = next(r for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs"))
    assert posted.path == "/apis/batch/v1/namespaces/unitvox/jobs"
    assert any("[prepare] skipped" in line for line in said)


def test_resubmitting_adopts_complete_and_running_jobs_instead_of_duplicating_them(fake):
    target = make_target()
    sample, fit, assign, merge = render_stage(target, "tokenize")
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    cluster.create(sample)
    succeed_job(fake, sample["metadata"]["name"])
    cluster.create(fit)  # still running when the controller arrives

    def progress(_seconds: float) -> None:
        succeed_job(fake, fit["metadata"]["name"])

    simulation = Simulation(fake)
    run, said = controller(fake, target, simulation, sleep=progress)
    run.submit(["tokenize"])
    names = [j["metadata"]["name"] for j in (sample, fit, assign, merge)]
    assert created(fake).count(names[0]) == 1 and created(fake).count(names[1]) == 1, "no duplicates"
    assert created(fake)[-2:] == names[2:]
    assert any(f"{names[0]}: adopted (already complete)" in line for line in said)
    assert any(f"{names[1]}: adopted (running)" in line for line in said)


def test_a_create_conflict_is_adopted(fake):
    target = make_target()
    (job,) = render_stage(target, "bpe")
    raced = []

    class RacingCluster(KubeCluster):
        """Another controller creates the Job between our look and our create."""

        def create(self, manifest):
            if manifest["kind"] == "Job" and not raced:
                raced.append(super().create(manifest))
            return super().create(manifest)

    cluster = RacingCluster(KubeCluster.connect("unitvox", host=fake.url)._api, "unitvox")
    said: list[str] = []
    checks = []
    run = Controller(cluster, target, open_store("/nonexistent-unused"), echo=said.append,
                     pending_reason=lambda stage: checks.append(stage) or (None if len(checks) > 1 else "new"),
                     sleep=lambda s: succeed_job(fake, job["metadata"]["name"]))
    run.run_stage("bpe")
    assert created(fake).count(job["metadata"]["name"]) == 2, "our create got 409 and adopted the other one"
    assert any("adopted (created elsewhere)" in line for line in said)


def test_waits_on_job_status_until_complete(fake):
    target = make_target()
    (job,) = render_stage(target, "bpe")
    name = job["metadata"]["name"]
    polls = []

    def tick(_seconds: float) -> None:
        polls.append(1)
        if len(polls) == 3:
            succeed_job(fake, name)
        else:
            fake.set_job_status(name, active=1)

    run, said = controller(fake, target, sleep=tick)
    run.pending_reason = lambda stage: None if polls else "new"
    run.run_stage("bpe")
    assert len(polls) == 3
    assert any("0/1 done, 1 running" in line for line in said)


def test_a_failed_pod_is_reported_with_its_reason_exit_code_and_last_log_lines(fake):
    target = make_target()

    def oom(job: dict) -> None:
        pod = fail_job(fake, job["metadata"]["name"], pod_status=terminated("OOMKilled", 137))
        fake.set_log(pod["metadata"]["name"], [f"step {i}" for i in range(40)])
        fake.add_event(pod["metadata"]["name"], "Killing", "Stopping container unitvox")

    fake.on_job_created = oom
    run, _ = controller(fake, target)
    with pytest.raises(SubmitFailed) as failure:
        run.submit(["prepare"])
    message = str(failure.value)
    assert "OOMKilled (exit code 137)" in message
    assert "step 39" in message and "step 19" not in message, "the last 20 lines only"
    assert "event: Killing: Stopping container unitvox" in message
    assert failure.value.code == 1


def test_failed_gates_and_bad_config_keep_their_exit_codes(fake):
    target = make_target()
    fake.on_job_created = lambda job: fail_job(fake, job["metadata"]["name"], pod_status=terminated("Error", 3))
    run, _ = controller(fake, target)
    with pytest.raises(SubmitFailed) as failure:
        run.submit(["bpe"])
    assert failure.value.code == 3 and "quality gates failed" in str(failure.value)


def test_an_image_pull_error_fails_at_once_and_deletes_the_job(fake):
    target = make_target()

    def bad_image(job: dict) -> None:
        from k8s_fake import add_job_pod

        add_job_pod(fake, job["metadata"]["name"], 0, status=waiting("ImagePullBackOff", "Back-off pulling image"))

    fake.on_job_created = bad_image
    run, _ = controller(fake, target)
    with pytest.raises(SubmitFailed, match="image pull error ImagePullBackOff: Back-off pulling image"):
        run.submit(["bpe"])
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 1 and fake.stored("jobs", created(fake)[0]) is None


def test_unschedulable_pods_fail_only_after_the_configured_time(fake):
    from k8s_fake import add_job_pod

    long_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    target = make_target("cluster.unschedulable_timeout_seconds=3600")
    fake.on_job_created = lambda job: add_job_pod(
        fake, job["metadata"]["name"], 0, status=unschedulable("0/3 nodes: Insufficient nvidia.com/gpu", since=long_ago))
    run, _ = controller(fake, target)
    with pytest.raises(SubmitFailed, match=r"unschedulable for 7\d\d\d s .*Insufficient nvidia.com/gpu"):
        run.submit(["bpe"])

    patient = make_target("cluster.unschedulable_timeout_seconds=36000", "bpe.vocab_size=123")
    ticks = []
    fake.on_job_created = lambda job: add_job_pod(fake, job["metadata"]["name"], 0,
                                                  status=unschedulable("no GPU", since=long_ago))
    (job,) = render_stage(patient, "bpe")
    run, _ = controller(fake, patient, sleep=lambda s: ticks.append(s) or (len(ticks) == 2 and succeed_job(fake, job["metadata"]["name"])))
    run.pending_reason = lambda stage: None if ticks else "new"
    run.run_stage("bpe")
    assert len(ticks) == 2


def test_a_complete_final_job_of_an_unfinished_stage_is_rerun(fake):
    target = make_target()
    (job,) = render_stage(target, "bpe")
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    cluster.create(job)
    succeed_job(fake, job["metadata"]["name"])  # finished, but its outputs are gone from the store
    simulation = Simulation(fake)
    run, said = controller(fake, target, simulation)
    run.submit(["bpe"])
    assert created(fake).count(job["metadata"]["name"]) == 2
    assert any("deleted" in line for line in said)


def test_cancel_deletes_the_controller_first_then_every_job_of_the_run(fake, capsys):
    target = make_target()
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    for job in render_stage(target, "prepare"):
        cluster.create(job)
    from unitvox.controller.render import render_driver

    cluster.create(render_driver(target, [])[1])
    code = main(["k8s", "cancel", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url])
    assert code == 0
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 3 and "controller" in deletes[0].path
    assert all(r.query.get("propagationPolicy") == "Background" or (r.body or {}).get("propagationPolicy") == "Background"
               for r in deletes)
    assert fake.objects("jobs") == []


def test_detach_submits_the_in_cluster_controller(fake, capsys):
    code = main(["k8s", "submit", "--config", "jobs/demo.yaml", "--run", RUN, "--image", IMAGE, "--detach",
                 "--set", "prepare.input=s3://bucket/raw", "--stage", "evaluate", "--api-server", fake.url])
    assert code == 0
    (driver,) = fake.objects("jobs")
    spec = driver["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "unitvox-controller"
    assert spec["containers"][0]["args"][:2] == ["k8s", "submit"] and "--stage=evaluate" in spec["containers"][0]["args"]
    assert len(fake.objects("configmaps")) == 1
    assert "unitvox k8s logs" in capsys.readouterr().out


def test_status_and_logs_read_the_runs_jobs_and_pods(fake, capsys):
    target = make_target()
    (job,) = render_stage(target, "bpe")
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    cluster.create(job)
    succeed_job(fake, job["metadata"]["name"])
    pod = fake.objects("pods")[0]["metadata"]["name"]
    fake.set_log(pod, ["bpe: vocabulary 300", "bpe: done"])
    assert main(["k8s", "status", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url]) == 0
    assert main(["k8s", "logs", "--run", RUN, "--stage", "bpe", "--namespace", "unitvox", "--api-server", fake.url]) == 0
    out = capsys.readouterr().out
    assert "bpe" in out and " complete " in out and job["metadata"]["name"] in out
    assert "bpe: done" in out
