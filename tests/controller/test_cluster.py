"""The cluster client against a fake API server over real HTTP.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/controller/test_cluster.py -q
"""

from __future__ import annotations

import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from k8s_fake import FakeKubernetes, fail_job, preempted, succeed_jobs, terminated, unschedulable, waiting

from unitvox.controller.cluster import (
    COMPLETION_INDEX,
    AlreadyExists,
    ClusterError,
    JobStatus,
    KubeCluster,
    NotFound,
    PodStatus,
)

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@pytest.fixture
def cluster(fake_kubernetes: FakeKubernetes):
    kube = KubeCluster.connect(fake_kubernetes.namespace, host=fake_kubernetes.url)
    yield kube
    kube.close()


def job_manifest(name: str, *, completions: int = 1, labels: dict[str, str] | None = None) -> dict:
    labels = labels or {"app.kubernetes.io/name": "unitvox"}
    container = {"name": "main", "image": "unitvox:test", "args": ["unitvox", "prepare"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "completionMode": "Indexed",
            "backoffLimitPerIndex": 1,
            "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


MANIFESTS = {
    "Job": job_manifest("prepare"),
    "Service": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "train-rendezvous"},
        "spec": {"clusterIP": "None", "selector": {"job-name": "train"}, "ports": [{"port": 29500}]},
    },
    "ConfigMap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"a.yaml": "k: 1"}},
    "PyTorchJob": {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train"},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}},
    },
}
PATHS = {
    "Job": "/apis/batch/v1/namespaces/default/jobs",
    "Service": "/api/v1/namespaces/default/services",
    "ConfigMap": "/api/v1/namespaces/default/configmaps",
    "PyTorchJob": "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs",
}


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_create_then_get_each_kind(cluster, fake_kubernetes, kind):
    manifest = MANIFESTS[kind]
    name = manifest["metadata"]["name"]

    created = cluster.create(manifest)

    assert created["metadata"]["name"] == name and created["metadata"]["namespace"] == "default"
    assert created["metadata"]["uid"]
    assert fake_kubernetes.requests[-1].path == PATHS[kind]
    assert fake_kubernetes.requests[-1].body["kind"] == kind
    fetched = cluster.get(kind, name)
    assert fetched["spec" if "spec" in manifest else "data"] == manifest.get("spec", manifest.get("data"))
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]


def test_second_create_is_already_exists(cluster):
    cluster.create(job_manifest("prepare"))
    with pytest.raises(AlreadyExists, match='jobs.batch "prepare" already exists') as raised:
        cluster.create(job_manifest("prepare"))
    assert raised.value.status == 409


def test_missing_objects_are_none_false_or_not_found(cluster):
    assert cluster.get("Service", "nothing") is None
    assert cluster.get("PyTorchJob", "nothing") is None
    assert cluster.job("nothing") is None
    assert cluster.delete("Job", "nothing") is False
    with pytest.raises(NotFound, match="nothing") as raised:
        cluster.logs("nothing")
    assert raised.value.status == 404


def test_unknown_kind_is_refused_by_name(cluster, fake_kubernetes):
    with pytest.raises(ValueError, match="Deployment"):
        cluster.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})
    with pytest.raises(ValueError, match="StatefulSet"):
        cluster.get("StatefulSet", "x")
    assert fake_kubernetes.requests == []


def test_api_refusal_carries_status_and_the_api_message(cluster):
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {}}
    with pytest.raises(ClusterError, match="metadata.name: Required value") as raised:
        cluster.create(nameless)
    assert raised.value.status == 422 and not isinstance(raised.value, (NotFound, AlreadyExists))


def test_jobs_by_label_selector_with_their_status(cluster, fake_kubernetes):
    cluster.create(job_manifest("prepare", completions=4, labels={"app": "unitvox", "stage": "prepare"}))
    cluster.create(job_manifest("tokenize", labels={"app": "unitvox", "stage": "tokenize"}))
    cluster.create(job_manifest("elsewhere", labels={"app": "other", "stage": "prepare"}))
    fake_kubernetes.set_job_status("prepare", active=2, succeeded=1, failed=1, failedIndexes="3", completedIndexes="0")

    jobs = cluster.jobs("app=unitvox,stage=prepare")

    assert [job.name for job in jobs] == ["prepare"]
    assert fake_kubernetes.requests[-1].query["labelSelector"] == "app=unitvox,stage=prepare"
    job = jobs[0]
    assert (job.active, job.succeeded, job.failed, job.completions) == (2, 1, 1, 4)
    assert (job.failed_indexes, job.completed_indexes, job.finished) == ("3", "0", None)
    assert job.labels == {"app": "unitvox", "stage": "prepare"}
    assert isinstance(job.created, datetime) and job.created.tzinfo is not None
    assert [job.name for job in cluster.jobs("app=unitvox")] == ["prepare", "tokenize"]


@pytest.mark.parametrize(
    ("conditions", "finished"),
    [
        ([{"type": "SuccessCriteriaMet", "status": "True"}], None),
        ([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}], "Complete"),
        ([{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}], "Failed"),
        ([{"type": "Complete", "status": "False"}], None),
    ],
)
def test_only_complete_or_failed_conditions_finish_a_job(conditions, finished):
    job = JobStatus.from_dict({"metadata": {"name": "j"}, "status": {"conditions": conditions}})
    assert job.finished == finished


IMAGE_PULL_BACKOFF = {
    "phase": "Pending",
    "conditions": [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-03-01T10:00:05Z"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-03-01T10:00:02Z"},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "unready: [main]"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-03-01T10:00:02Z"},
    ],
    "hostIP": "10.0.3.7",
    "podIP": "10.244.1.17",
    "startTime": "2025-03-01T10:00:02Z",
    "containerStatuses": [
        {
            "name": "main",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "unitvox:typo"'}},
            "lastState": {},
            "ready": False,
            "restartCount": 0,
            "image": "unitvox:typo",
            "imageID": "",
            "started": False,
        }
    ],
    "qosClass": "Burstable",
}


def test_pod_statuses_from_realistic_bodies(cluster, fake_kubernetes):
    labels = {"job-name": "prepare"}
    fake_kubernetes.add_pod("pull", labels=labels, status=IMAGE_PULL_BACKOFF, annotations={COMPLETION_INDEX: "2"})
    fake_kubernetes.add_pod("oom", labels=labels, status=terminated("OOMKilled", 137), node="gpu-1")
    crash_loop = waiting("CrashLoopBackOff", "back-off 40s", last=terminated("OOMKilled", 137), restart_count=3)
    fake_kubernetes.add_pod("loop", labels=labels, status=crash_loop)
    pending = unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", since="2025-03-01T10:00:00Z")
    fake_kubernetes.add_pod("pending", labels=labels, status=pending)
    fake_kubernetes.add_pod("evicted", labels=labels, status=preempted())
    fake_kubernetes.add_pod("unrelated", labels={"job-name": "tokenize"}, phase="Running")

    pods = {pod.name: pod for pod in cluster.pods("job-name=prepare")}

    assert sorted(pods) == ["evicted", "loop", "oom", "pending", "pull"]
    pull = pods["pull"]
    assert (pull.phase, pull.waiting_reason, pull.completion_index) == ("Pending", "ImagePullBackOff", 2)
    assert "unitvox:typo" in pull.waiting_message and pull.exit_code is None and pull.terminated_reason is None
    oom = pods["oom"]
    assert (oom.phase, oom.terminated_reason, oom.exit_code, oom.node) == ("Failed", "OOMKilled", 137, "gpu-1")
    loop = pods["loop"]
    assert (loop.waiting_reason, loop.terminated_reason, loop.exit_code) == ("CrashLoopBackOff", "OOMKilled", 137)
    assert loop.restart_count == 3 and loop.container == "main"
    pending = pods["pending"]
    assert pending.unschedulable_since == datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)
    assert "Insufficient nvidia.com/gpu" in pending.unschedulable_message and pods["pull"].unschedulable_since is None
    assert pods["evicted"].disruption and not any(pods[name].disruption for name in ("oom", "loop", "pull"))
    assert pods["evicted"].exit_code == 143


def test_a_failing_init_container_is_the_one_reported():
    pod = PodStatus.from_dict(
        {
            "metadata": {"name": "p", "labels": {COMPLETION_INDEX: "5"}},
            "spec": {"initContainers": [{"name": "fetch"}], "containers": [{"name": "main"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "fetch", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ],
                "containerStatuses": [{"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}}],
            },
        }
    )
    assert (pod.container, pod.waiting_reason, pod.restart_count, pod.completion_index) == (
        "fetch",
        "CrashLoopBackOff",
        2,
        5,
    )


def test_logs_tail_lines(cluster, fake_kubernetes):
    fake_kubernetes.add_pod("prepare-0", labels={"job-name": "prepare"}, phase="Running")
    fake_kubernetes.set_log("prepare-0", [f"line {n}" for n in range(10)])

    assert list(cluster.logs("prepare-0", tail_lines=3, container="main")) == ["line 7", "line 8", "line 9"]
    assert fake_kubernetes.requests[-1].query == {"tailLines": "3", "container": "main"}
    assert list(cluster.logs("prepare-0"))[0] == "line 0"


def test_followed_logs_arrive_line_by_line(cluster, fake_kubernetes):
    fake_kubernetes.log_delay = 0.15
    fake_kubernetes.add_pod("train-0", labels={"job-name": "train"}, phase="Running")
    fake_kubernetes.set_log("train-0", ["step 1", "step 2", "step 3", "step 4"])

    arrivals = [(line, time.monotonic()) for line in cluster.logs("train-0", follow=True)]

    assert [line for line, _ in arrivals] == ["step 1", "step 2", "step 3", "step 4"]
    assert fake_kubernetes.requests[-1].query["follow"] == "true"
    # Streamed lines arrive spread over the server's delays; a buffered body would arrive all at once.
    assert arrivals[-1][1] - arrivals[0][1] >= 0.3


def test_delete_propagates_to_the_jobs_pods(cluster, fake_kubernetes):
    cluster.create(job_manifest("prepare"))
    fake_kubernetes.add_pod("prepare-0-abcde", labels={"job-name": "prepare"}, phase="Running")

    assert cluster.delete("Job", "prepare") is True

    request = fake_kubernetes.requests[-1]
    assert (request.method, request.path) == ("DELETE", "/apis/batch/v1/namespaces/default/jobs/prepare")
    assert request.query["propagationPolicy"] == "Background"
    assert cluster.job("prepare") is None and cluster.pods("job-name=prepare") == []
    cluster.create(MANIFESTS["PyTorchJob"])
    assert cluster.delete("PyTorchJob", "train") is True and cluster.get("PyTorchJob", "train") is None


def test_events_of_one_object_oldest_first(cluster, fake_kubernetes):
    fake_kubernetes.add_event("prepare", "SuccessfulCreate", "Created pod: prepare-0-abcde")
    fake_kubernetes.add_event("tokenize", "SuccessfulCreate", "Created pod: tokenize-0-fghij")
    fake_kubernetes.add_event("prepare", "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    assert cluster.events("prepare") == [
        "SuccessfulCreate: Created pod: prepare-0-abcde",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    ]
    assert fake_kubernetes.requests[-1].query["fieldSelector"] == "involvedObject.name=prepare"


def test_fake_simulates_succeeding_and_failing_jobs(cluster, fake_kubernetes):
    succeed_jobs(fake_kubernetes)
    cluster.create(job_manifest("prepare", completions=3))

    job = cluster.job("prepare")
    assert (job.finished, job.succeeded, job.completed_indexes) == ("Complete", 3, "0-2")
    assert sorted(pod.completion_index for pod in cluster.pods("job-name=prepare")) == [0, 1, 2]

    fake_kubernetes.on_job_created = None
    cluster.create(job_manifest("train", completions=2))
    fail_job(fake_kubernetes, "train", index=1, pod_status=terminated("OOMKilled", 137))
    job = cluster.job("train")
    assert (job.finished, job.failed, job.failed_indexes) == ("Failed", 1, "1")
    [pod] = cluster.pods("job-name=train")
    assert (pod.completion_index, pod.terminated_reason, pod.exit_code) == (1, "OOMKilled", 137)


def test_unreachable_api_names_the_host():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    cluster = KubeCluster.connect("default", host=host)
    with pytest.raises(ClusterError, match=f"cannot reach the Kubernetes API at {host}") as raised:
        cluster.job("prepare")
    assert raised.value.status is None


def test_connect_through_a_kubeconfig(fake_kubernetes, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake_kubernetes.url}"}}}}]
users: [{{name: tester, user: {{token: not-a-secret}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: tester, namespace: default}}}}]
current-context: fake
"""
    )
    cluster = KubeCluster.connect("default", kubeconfig=str(kubeconfig))
    cluster.create(job_manifest("prepare"))
    assert cluster.job("prepare").name == "prepare"

    with pytest.raises(ClusterError, match=f"{kubeconfig}.*'nowhere'"):
        KubeCluster.connect("default", kubeconfig=str(kubeconfig), context="nowhere")
    with pytest.raises(ClusterError, match="missing-kubeconfig"):
        KubeCluster.connect("default", kubeconfig=str(tmp_path / "missing-kubeconfig"))


def test_in_cluster_config_comes_from_the_service_account(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    if SERVICE_ACCOUNT_TOKEN.exists():  # these tests themselves run in a pod
        assert KubeCluster.connect("default").host == "https://10.96.0.1:443"
    else:
        with pytest.raises(ClusterError, match="service account"):
            KubeCluster.connect("default")
