"""`cluster.training.launcher: trainjob`: a Kubeflow Trainer v2 TrainJob, checked field by field against
the Trainer API and driven through the fake API server like the other launchers.

Run: .venv/bin/python -m pytest tests/controller/test_trainjob.py
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from k8s_fake import FakeKubernetes, terminated

from unitvox.cli import main
from unitvox.config import load
from unitvox.controller import kubeflow
from unitvox.controller.cluster import KubeCluster
from unitvox.controller.render import Target, render_stage
from unitvox.controller.submit import Controller, SubmitFailed
from unitvox.store import open_store

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")  # as in test_render.py
RUN = "s3://bucket/runs/exp1"
IMAGE = "registry.example/unitvox:0.1.0"
INPUT = "prepare.input=s3://bucket/raw"
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}

# The TrainJob API of Kubeflow Trainer v2.1, transcribed from the json tags in
# github.com/kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go (TrainJobSpec, RuntimeRef,
# Trainer, PodTemplateOverride, PodTemplateSpecOverride, ContainerOverride). A field outside these is
# one the API server would refuse (kubectl's strict field validation) or drop.
TRAINJOB_SPEC = {"runtimeRef", "initializer", "trainer", "labels", "annotations", "podTemplateOverrides",
                 "suspend", "managedBy"}
RUNTIME_REF = {"name": str, "apiGroup": str, "kind": str}
RUNTIME_KINDS = {"ClusterTrainingRuntime", "TrainingRuntime"}
TRAINER = {"image": str, "command": list, "args": list, "env": list, "numNodes": int, "resourcesPerNode": dict,
           "numProcPerNode": int}
POD_TEMPLATE_OVERRIDE = {"targetJobs", "metadata", "spec"}
POD_TEMPLATE_SPEC_OVERRIDE = {"serviceAccountName", "nodeSelector", "affinity", "tolerations", "volumes",
                              "initContainers", "containers", "schedulingGates", "imagePullSecrets"}
CONTAINER_OVERRIDE = {"name", "env", "volumeMounts"}
# Envs of the trainer's own container may be set only through spec.trainer, never an override.
RESERVED_CONTAINERS = {"node", "dataset-initializer", "model-initializer"}


def target(*overrides, **options) -> Target:
    config = load("jobs/base.yaml", [INPUT, "cluster.training.launcher=trainjob", "cluster.training.nodes=2",
                                     "cluster.resources.train.gpus=4", *overrides])
    return Target(config, RUN, IMAGE, **options)


def test_trainjob_fields_are_those_of_the_trainer_v2_api():
    (job,) = render_stage(target(), "train")
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    name = job["metadata"]["name"]
    assert len(name) <= 63 and name[0].isalpha(), "TrainJob names are RFC 1035 labels"
    spec = job["spec"]
    assert set(spec) <= TRAINJOB_SPEC, set(spec) - TRAINJOB_SPEC
    reference = spec["runtimeRef"]
    assert set(reference) == set(RUNTIME_REF) and all(isinstance(reference[k], t) for k, t in RUNTIME_REF.items())
    assert reference == {"name": "unitvox-torch", "apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime"}
    trainer = spec["trainer"]
    assert set(trainer) <= set(TRAINER), set(trainer) - set(TRAINER)
    for key, kind in TRAINER.items():
        assert isinstance(trainer[key], kind) and not isinstance(trainer[key], bool), key
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert all(isinstance(word, str) for word in trainer["command"] + trainer["args"])
    (override,) = spec["podTemplateOverrides"]
    assert set(override) <= POD_TEMPLATE_OVERRIDE and override["targetJobs"] == [{"name": kubeflow.TRAINER_NODE}]
    assert set(override["metadata"]) == {"labels"}
    assert set(override["spec"]) <= POD_TEMPLATE_SPEC_OVERRIDE, set(override["spec"]) - POD_TEMPLATE_SPEC_OVERRIDE
    for container in override["spec"]["containers"]:
        assert set(container) <= CONTAINER_OVERRIDE
        assert not (container["name"] in RESERVED_CONTAINERS and "env" in container)


def test_trainjob_pieces_are_valid_kubernetes_objects():
    """The trainer and the override are made of core types (EnvVar, ResourceRequirements, Volume,
    VolumeMount, Toleration ...): put back into a pod, they validate strictly."""
    (job,) = render_stage(target(), "train")
    trainer, (override,) = job["spec"]["trainer"], job["spec"]["podTemplateOverrides"]
    container = {"name": kubeflow.TRAINER_NODE, "image": trainer["image"], "command": trainer["command"],
                 "args": trainer["args"], "env": trainer["env"], "resources": trainer["resourcesPerNode"],
                 "volumeMounts": override["spec"]["containers"][0]["volumeMounts"]}
    pod = {key: value for key, value in override["spec"].items() if key != "containers"}
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                "template": {"metadata": override["metadata"], "spec": {**pod, "containers": [container]}}}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(template, version, strict=True)


def test_trainjob_runs_what_the_job_launcher_runs():
    (job,) = render_stage(target(), "train")
    (pytorch,) = render_stage(target("cluster.training.launcher=pytorchjob"), "train")
    (indexed_job,) = render_stage(target("cluster.training.nodes=1", "cluster.training.launcher=job"), "train")
    trainer, (override,) = job["spec"]["trainer"], job["spec"]["podTemplateOverrides"]
    pytorch_pod = pytorch["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    reference = pytorch_pod["containers"][0]
    assert trainer["image"] == IMAGE
    assert trainer["command"] == ["/usr/bin/tini", "--", "torchrun"] == reference["command"]
    assert trainer["args"] == reference["args"], "the same argv as the PyTorchJob (torchrun reads PET_* from Trainer)"
    assert trainer["args"][:3] == ["-m", "unitvox", "train"] and "--run-root" in trainer["args"]
    job_container = indexed_job["spec"]["template"]["spec"]["containers"][0]
    assert trainer["resourcesPerNode"] == job_container["resources"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    by_name = {entry["name"]: entry for entry in trainer["env"]}
    for entry in job_container["env"]:
        assert by_name[entry["name"]] == entry, entry["name"]
    secret = {name: entry["valueFrom"]["secretKeyRef"] for name, entry in by_name.items() if "valueFrom" in entry}
    assert set(secret) == S3_KEYS and {ref["name"] for ref in secret.values()} == {"unitvox-s3"}
    assert not secret["AWS_ACCESS_KEY_ID"].get("optional") and secret["AWS_ENDPOINT_URL"]["optional"] is True
    volumes = {volume["name"]: volume for volume in override["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == target().config_map_name
    assert [v for v in override["spec"]["volumes"] if v["name"] != "config"] == [
        v for v in pytorch_pod["volumes"] if v["name"] != "config"], "scratch and /dev/shm as for Jobs"
    assert override["spec"]["containers"][0]["volumeMounts"] == reference["volumeMounts"]
    assert override["spec"]["serviceAccountName"] == "unitvox-job"
    assert override["spec"]["tolerations"] == pytorch_pod["tolerations"]
    assert override["metadata"]["labels"] == job["metadata"]["labels"]
    assert override["metadata"]["labels"]["app.kubernetes.io/component"] == "train", "the PodMonitor selects these pods"


def test_the_runtime_is_configurable():
    (job,) = render_stage(target("cluster.training.runtime=torch-distributed",
                                 "cluster.training.runtime_kind=ClusterTrainingRuntime"), "train")
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert job["spec"]["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
    from unitvox.config import ConfigError

    with pytest.raises(ConfigError, match=r"cluster\.training\.runtime_kind"):
        load("jobs/base.yaml", ["cluster.training.runtime_kind=JobSet"])


@pytest.fixture
def fake():
    with FakeKubernetes(namespace="unitvox") as server:
        yield server


def trainer_pod(fake, job_name: str, index: int, status: dict) -> None:
    """A pod as JobSet creates it for a TrainJob's node job."""
    stored = fake.stored("trainjobs", job_name)
    labels = {**stored["spec"]["podTemplateOverrides"][0]["metadata"]["labels"],
              kubeflow.JOBSET_NAME_LABEL: job_name, "batch.kubernetes.io/job-completion-index": str(index)}
    fake.add_pod(f"{job_name}-node-0-{index}-abcde", labels=labels, status=status, node="gpu-1")


def condition(kind: str, status: str = "True", reason: str = "") -> dict:
    from k8s_fake import now

    return {"type": kind, "status": status, "reason": reason or kind, "message": "", "lastTransitionTime": now()}


def test_a_queued_trainjob_is_created_admitted_followed_and_reported(fake, capsys):
    config = target("cluster.queue=team-gpu", "cluster.poll_seconds=0.01")
    (job,) = render_stage(config, "train")
    name = job["metadata"]["name"]
    polls = []

    def operator(_seconds: float) -> None:
        """Kueue admits the TrainJob, Trainer's JobSet runs both nodes, then the TrainJob completes."""
        polls.append(1)
        if len(polls) == 2:
            fake.update("trainjobs", name, spec={"suspend": False},
                        status={"conditions": [condition("Suspended", "False", "Resumed")]})
        elif len(polls) == 3:
            for index in range(2):
                trainer_pod(fake, name, index, {"phase": "Running"})
        elif len(polls) == 5:
            fake.update("trainjobs", name, status={"conditions": [condition("Complete")]})

    said: list[str] = []
    done = []
    run = Controller(KubeCluster.connect("unitvox", host=fake.url), config, open_store("/nonexistent-unused"),
                     echo=said.append, sleep=operator, pending_reason=lambda stage: None if done else "new")
    original = run._follow
    run._follow = lambda job, stage: (original(job, stage), done.append(stage))
    outcome = run.run_stage("train")
    assert outcome.status == "done" and outcome.jobs == [name]
    posted = [r for r in fake.requests if r.method == "POST"]
    assert posted[-1].path == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/unitvox/trainjobs"
    assert posted[-1].body["spec"]["suspend"] is True
    assert any("queued, waiting for Kueue" in line for line in said) and any("admitted after" in line for line in said)
    assert any("2 pods: Running" in line for line in said), said

    # Resubmitted while it exists, it is adopted; status and cancel see it like a Job.
    fake.update("trainjobs", name, status={"conditions": [condition("Suspended", "False", "Resumed")]})
    run2 = Controller(KubeCluster.connect("unitvox", host=fake.url), config, open_store("/nonexistent-unused"),
                      echo=said.append, sleep=operator, pending_reason=lambda stage: "new")
    run2._start(job)
    assert any(f"{name}: adopted (running)" in line for line in said)
    assert main(["k8s", "status", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url]) == 0
    out = capsys.readouterr().out
    assert name in out and "train" in out
    assert main(["k8s", "cancel", "--run", RUN, "--namespace", "unitvox", "--api-server", fake.url]) == 0
    assert f"deleted TrainJob {name}" in capsys.readouterr().out
    assert fake.objects("trainjobs") == []


def test_a_failed_trainjob_reports_its_pod(fake):
    config = target("cluster.poll_seconds=0.01")
    (job,) = render_stage(config, "train")
    name = job["metadata"]["name"]

    def operator(_seconds: float) -> None:
        if not fake.objects("pods"):
            trainer_pod(fake, name, 0, terminated("OOMKilled", 137))
            fake.update("trainjobs", name, status={"conditions": [condition("Failed", reason="JobSetFailed")]})

    run = Controller(KubeCluster.connect("unitvox", host=fake.url), config, open_store("/nonexistent-unused"),
                     echo=lambda line: None, sleep=operator, pending_reason=lambda stage: "new")
    with pytest.raises(SubmitFailed, match="OOMKilled"):
        run.run_stage("train")
