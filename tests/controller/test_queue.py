"""Kueue: queued rendering, and the controller against a fake API server where the test plays Kueue.

Run: .venv/bin/python -m pytest tests/controller/test_queue.py
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from k8s_fake import FakeKubernetes, add_job_pod, admit_job, queued_jobs, succeed_job, unschedulable
import kubernetes_validate

from unitvox.cli import main
from unitvox.config import ConfigError, load
from unitvox.controller.cluster import KubeCluster
from unitvox.controller.render import Target, render_ablation, render_driver, render_pipeline, render_stage
from unitvox.controller.submit import Controller
from unitvox.store import open_store

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")  # as in test_render.py
INPUT = "prepare.input=s3://bucket/raw"
RUN = "s3://bucket/runs/exp1"
IMAGE = "registry.example/unitvox:0.1.0"
QUEUE = ["cluster.queue=team-gpu", "cluster.priority_class=research-high", "cluster.poll_seconds=0.01"]
LAST_PHASE = {"prepare": "merge", "tokenize": "merge", "bpe": "train", "train": "fit"}


def validate(objects) -> None:
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.fixture
def fake():
    with FakeKubernetes(namespace="unitvox") as server:
        yield server


def queued_target(config="jobs/demo.yaml", *overrides) -> Target:
    return Target(load(config, [INPUT, *QUEUE, *overrides]), RUN, IMAGE)


def test_with_a_queue_every_job_is_suspended_and_labelled_and_validates():
    objects = render_pipeline(queued_target("jobs/base.yaml"))
    validate(objects)
    jobs = [obj for obj in objects if obj["kind"] == "Job"]
    assert len(jobs) == 11
    for job in jobs:
        assert job["spec"]["suspend"] is True
        labels = job["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-gpu"
        assert labels["kueue.x-k8s.io/priority-class"] == "research-high"
        assert "priorityClassName" not in job["spec"]["template"]["spec"], "with a queue the priority is Kueue's"
    plain = [obj for obj in render_pipeline(Target(load("jobs/base.yaml", [INPUT]), RUN, IMAGE)) if obj["kind"] == "Job"]
    assert not any("suspend" in job["spec"] or "kueue.x-k8s.io/queue-name" in job["metadata"]["labels"] for job in plain)


def test_without_a_queue_the_priority_class_is_the_pods():
    (job,) = render_stage(Target(load("jobs/base.yaml", [INPUT, "cluster.priority_class=batch-low"]), RUN, IMAGE), "bpe")
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"
    assert "kueue.x-k8s.io/priority-class" not in job["metadata"]["labels"]


def test_training_ablation_and_kubeflow_workloads_are_queued_but_the_controller_is_not():
    from unitvox.ablations.suite import load_suite

    target = queued_target("jobs/base.yaml", "cluster.training.nodes=2")
    service, training = render_stage(target, "train")
    assert training["spec"]["suspend"] is True and "kueue.x-k8s.io/queue-name" not in service["metadata"]["labels"]
    ablation = render_ablation(Target(target.config, RUN, IMAGE, suite=load_suite("jobs/ablations/speaker.yaml")))[1]
    assert ablation["spec"]["suspend"] is True and ablation["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpu"
    (pytorch,) = render_stage(queued_target("jobs/base.yaml", "cluster.training.launcher=pytorchjob"), "train")
    assert pytorch["spec"]["runPolicy"]["suspend"] is True
    (trainjob,) = render_stage(queued_target("jobs/base.yaml", "cluster.training.launcher=trainjob"), "train")
    assert trainjob["spec"]["suspend"] is True
    for workload in (pytorch, trainjob):
        assert workload["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpu"
    driver = render_driver(target, [])[1]
    assert "suspend" not in driver["spec"] and "kueue.x-k8s.io/queue-name" not in driver["metadata"]["labels"]


@pytest.mark.parametrize("key", ["cluster.queue", "cluster.priority_class"])
def test_a_queue_name_that_is_no_kubernetes_name_is_refused(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load("jobs/demo.yaml", [f"{key}=Team GPU"])


def test_rendering_a_queued_pipeline_for_kubectl_gives_the_controller(capsys):
    argv = ["k8s", "render", "--config", "jobs/demo.yaml", "--run", RUN, "--image", IMAGE, "--set", INPUT,
            "--set", "cluster.queue=team-gpu"]
    assert main(argv) == 0
    import yaml

    objects = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert [obj["kind"] for obj in objects] == ["ConfigMap", "Job"]
    assert objects[1]["metadata"]["labels"]["unitvox.dev/stage"] == "controller"
    assert main([*argv, "--all-jobs"]) == 0
    every = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert len(every) > 2 and all(obj["spec"]["suspend"] for obj in every if obj["kind"] == "Job")


class Kueue:
    """Plays Kueue and the Job controller, one step per controller poll: admit the oldest queued Job
    (after it has waited `queued_polls` polls), then complete an admitted one on the next poll."""

    def __init__(self, fake: FakeKubernetes, queued_polls: int = 2):
        self.fake, self.queued_polls = fake, queued_polls
        self.waiting: dict[str, int] = {}
        self.admitted: list[str] = []
        self.done: set[str] = set()
        self.created_while: list[tuple[str, list[str]]] = []  # (Job, Jobs not yet complete then)
        fake.on_job_created = self.created

    def created(self, job: dict) -> None:
        assert job["spec"]["suspend"] is True, "a queued Job is created suspended"
        name = job["metadata"]["name"]
        unfinished = [other["metadata"]["name"] for other in self.fake.objects("jobs")
                      if other["metadata"]["name"] != name and not other["status"].get("succeeded")]
        self.created_while.append((name, unfinished))
        self.waiting[name] = 0

    def tick(self, _seconds: float) -> None:
        for name in [n for n in self.admitted if n not in self.done]:
            succeed_job(self.fake, name)
            labels = self.fake.stored("jobs", name)["metadata"]["labels"]
            if LAST_PHASE.get(labels["unitvox.dev/stage"]) == labels["unitvox.dev/phase"]:
                self.done.add(labels["unitvox.dev/stage"])
            self.done.add(name)
        for name in queued_jobs(self.fake):
            self.waiting[name] += 1
            if self.waiting[name] > self.queued_polls:
                admit_job(self.fake, name)
                self.admitted.append(name)

    def pending(self, stage: str) -> str | None:
        return None if stage in self.done else "not run yet"


def test_a_queued_pipeline_is_submitted_stage_after_stage_as_each_is_admitted_and_finished(fake):
    kueue = Kueue(fake)
    target = queued_target()
    said: list[str] = []
    run = Controller(KubeCluster.connect("unitvox", host=fake.url), target, open_store("/nonexistent-unused"),
                     echo=said.append, sleep=kueue.tick, pending_reason=kueue.pending)
    outcomes = run.submit(["prepare", "tokenize", "bpe"])
    assert [o.status for o in outcomes] == ["done", "done", "done"]
    expected = [job["metadata"]["name"] for stage in ("prepare", "tokenize", "bpe") for job in render_stage(target, stage)]
    assert [name for name, _ in kueue.created_while] == expected
    assert all(unfinished == [] for _, unfinished in kueue.created_while), "each Job is created once the one before finished"
    assert kueue.admitted == expected
    assert sum("queued, waiting for Kueue to admit it" in line for line in said) == len(expected)
    assert sum("admitted after" in line for line in said) == len(expected)
    assert any("suspended in queue team-gpu" in line for line in said)


def test_time_spent_queued_does_not_count_as_unschedulable(fake):
    target = queued_target("jobs/demo.yaml", "cluster.unschedulable_timeout_seconds=60")
    (job,) = render_stage(target, "bpe")
    name = job["metadata"]["name"]
    two_hours_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    polls = []

    def tick(_seconds: float) -> None:
        polls.append(1)
        if len(polls) == 2:  # admitted after two hours in the queue; its pod then waits for a node
            admit_job(fake, name)
            add_job_pod(fake, name, 0, status=unschedulable("0/3 nodes: Insufficient nvidia.com/gpu", since=two_hours_ago))
        elif len(polls) == 4:
            succeed_job(fake, name)

    # The Job has been in the queue since two hours ago, far longer than the unschedulable timeout.
    fake.on_job_created = lambda created: fake.update("jobs", name, metadata={"creationTimestamp": two_hours_ago})
    said: list[str] = []
    run = Controller(KubeCluster.connect("unitvox", host=fake.url), target, open_store("/nonexistent-unused"),
                     echo=said.append, sleep=tick, pending_reason=lambda stage: None if polls else "new")
    run.run_stage("bpe")
    assert len(polls) == 4, "it waited in the queue, then on the scheduler, and finished"
    assert any(f"{name}: admitted after 72" in line for line in said), said


def test_status_says_queued_with_the_wait_and_cancel_deletes_queued_jobs(fake, capsys):
    target = queued_target()
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    segment, merge = render_stage(target, "prepare")
    cluster.create(segment)
    admit_job(fake, segment["metadata"]["name"])
    fake.set_job_status(segment["metadata"]["name"], active=1, ready=1)
    cluster.create(merge)
    assert main(["k8s", "status", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[-1]: line for line in out.splitlines()[1:]}
    assert "queued" in rows[merge["metadata"]["name"]].split()
    assert "running" in rows[segment["metadata"]["name"]].split()
    assert "waited" in out.splitlines()[0] and rows[merge["metadata"]["name"]].split()[-2].endswith("s")
    assert main(["k8s", "cancel", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url]) == 0
    out = capsys.readouterr().out
    assert f"deleted Job {merge['metadata']['name']} (queued)" in out
    assert fake.objects("jobs") == []

