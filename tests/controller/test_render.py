"""Rendering: every stage of the shipped configs validates strictly and carries the Job policy fields.

Run: .venv/bin/python -m pytest tests/controller/test_render.py   (UNITVOX_UPDATE_SNAPSHOTS=1 rewrites snapshots)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from unitvox import exitcodes
from unitvox.ablations.suite import load_suite
from unitvox.config import load
from unitvox.controller.render import (
    CONFIG_FILE, Target, render_ablation, render_command, render_diagnoses, render_driver, render_pipeline,
    render_stage, to_yaml_stream,
)
from unitvox.controller.use_jobs import resynthesize_command

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")  # the range the README names
RUN = "s3://bucket/runs/exp1"
IMAGE = "registry.example/unitvox:0.1.0"
SNAPSHOTS = Path(__file__).parent / "snapshots"
INPUT = "prepare.input=s3://bucket/raw"


def target(config="jobs/base.yaml", *overrides, **options) -> Target:
    return Target(load(config, [INPUT, *overrides]), RUN, IMAGE, **options)


def validate(objects) -> None:
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def jobs(objects):
    return [obj for obj in objects if obj["kind"] == "Job"]


def pod(obj):
    return obj["spec"]["template"]["spec"]


def test_every_stage_of_the_base_config_validates_strictly():
    objects = render_pipeline(target())
    validate(objects)
    rendered = [(j["metadata"]["labels"]["unitvox.dev/stage"], j["metadata"]["labels"]["unitvox.dev/phase"]) for j in jobs(objects)]
    assert rendered == [("prepare", "segment"), ("prepare", "merge"), ("tokenize", "sample"), ("tokenize", "fit"),
                        ("tokenize", "assign"), ("tokenize", "merge"), ("bpe", "train"), ("train", "fit"),
                        ("evaluate", "score"), ("evaluate", "merge"), ("samples", "render")]
    assert objects[0]["kind"] == "ConfigMap"
    # Pods listen for Prometheus on every interface; a local run of the same config keeps to loopback.
    assert yaml.safe_load(objects[0]["data"]["config.yaml"]) == load(
        "jobs/base.yaml", [INPUT, "metrics.address=0.0.0.0"]).to_dict()


def test_strict_validation_would_catch_a_misspelt_field():
    (job,) = render_stage(target(), "bpe")
    broken = copy.deepcopy(job)
    broken["spec"]["backofLimit"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_sharded_phases_are_indexed_jobs_with_per_index_retries():
    config = load("jobs/base.yaml", [INPUT, "prepare.shards=6"])
    segment, merge = render_stage(Target(config, RUN, IMAGE), "prepare")
    assert segment["spec"]["completionMode"] == "Indexed"
    assert segment["spec"]["completions"] == segment["spec"]["parallelism"] == 6
    assert segment["spec"]["backoffLimitPerIndex"] == config.cluster.backoff_limit
    assert segment["spec"]["maxFailedIndexes"] == config.cluster.max_failed_indexes
    args = pod(segment)["containers"][0]["args"]
    assert args == ["prepare", "--config", CONFIG_FILE, "--run", RUN, "--phase", "segment", "--shard-count", "6"]
    assert "completionMode" not in merge["spec"] and merge["spec"]["backoffLimit"] == config.cluster.backoff_limit


def test_every_job_carries_the_failure_policy_limits_and_security_context():
    config = load("jobs/base.yaml", [INPUT])
    for job in jobs(render_pipeline(Target(config, RUN, IMAGE))):
        spec, stage = job["spec"], job["metadata"]["labels"]["unitvox.dev/stage"]
        rules = spec["podFailurePolicy"]["rules"]
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
        fail = next(rule for rule in rules if rule["action"] == "FailJob")
        assert fail["onExitCodes"] == {"containerName": "unitvox", "operator": "In", "values": list(exitcodes.PERMANENT)}
        assert {2, 3} <= set(exitcodes.PERMANENT) and 1 not in exitcodes.PERMANENT and 143 not in exitcodes.PERMANENT
        assert spec["ttlSecondsAfterFinished"] == config.cluster.ttl_seconds_after_finished
        assert spec["activeDeadlineSeconds"] == getattr(config.cluster.resources, stage).deadline_seconds
        template = pod(job)
        assert template["restartPolicy"] == "Never"
        assert template["terminationGracePeriodSeconds"] == config.cluster.termination_grace_seconds >= 300
        assert template["securityContext"]["runAsNonRoot"] is True
        assert template["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert template["automountServiceAccountToken"] is False
        container = template["containers"][0]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        volumes = {volume["name"]: volume for volume in template["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts["/dev/shm"] == "dshm" and mounts["/scratch"] == "scratch"
        assert {"name": "TMPDIR", "value": "/scratch"} in container["env"]
        assert container["envFrom"][0] == {"secretRef": {"name": "unitvox-s3"}}
        assert not any("AWS" in entry["name"] for entry in container["env"]), "S3 credentials come only from the Secret"
        assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
        resources = getattr(config.cluster.resources, stage)
        assert container["resources"]["limits"]["memory"] == resources.memory
        assert container["resources"]["limits"].get("nvidia.com/gpu", "0") == str(resources.gpus)
        gpu_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert template.get("tolerations") == (gpu_toleration if resources.gpus else None)
        labels = job["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "unitvox" and labels["unitvox.dev/run"] == labels["app.kubernetes.io/instance"]
        assert job["spec"]["template"]["metadata"]["labels"] == labels
        assert all(len(value) <= 63 for value in labels.values()) and len(job["metadata"]["name"]) <= 52


def test_gpu_stages_ask_for_nvidia_gpus_and_cpu_stages_do_not():
    objects = render_pipeline(target())
    by_stage = {j["metadata"]["labels"]["unitvox.dev/stage"]: pod(j)["containers"][0]["resources"] for j in jobs(objects)}
    assert by_stage["train"]["limits"]["nvidia.com/gpu"] == "1" == by_stage["train"]["requests"]["nvidia.com/gpu"]
    assert "nvidia.com/gpu" not in by_stage["prepare"]["limits"]


def test_multi_node_training_is_an_indexed_job_with_a_rendezvous_service():
    objects = render_stage(target("jobs/base.yaml", "cluster.training.nodes=3", "cluster.resources.train.gpus=8"), "train")
    validate(objects)
    service, job = objects
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    template = pod(job)
    assert template["subdomain"] == service["metadata"]["name"]
    container = template["containers"][0]
    assert container["command"] == ["/usr/bin/tini", "--", "torchrun"]
    args = container["args"]
    assert "--nnodes=3" in args and "--nproc-per-node=8" in args and "--node-rank=$(NODE_RANK)" in args
    assert f"--master-addr={job['metadata']['name']}-0.{service['metadata']['name']}" in args
    assert args[args.index("-m"):][:3] == ["-m", "unitvox", "train"] and "--run-root" in args and "--run" not in args
    assert {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} in container["env"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_single_gpu_training_runs_unitvox_directly():
    (job,) = render_stage(target(), "train")
    container = pod(job)["containers"][0]
    assert container["command"] == ["/usr/bin/tini", "--", "unitvox"]
    assert container["args"][:2] == ["train", "--config"] and "completionMode" not in job["spec"]


def test_pytorchjob_launcher_renders_a_kubeflow_job_whose_pod_templates_validate():
    (job,) = render_stage(target("jobs/base.yaml", "cluster.training.launcher=pytorchjob", "cluster.training.nodes=2",
                                 "cluster.resources.train.gpus=4"), "train")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "4"
    for spec in replicas.values():
        assert spec["restartPolicy"] == "ExitCode"
        assert spec["template"]["spec"]["containers"][0]["name"] == "pytorch"
        validate([{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": spec["template"]}])


def test_ablation_suite_is_one_indexed_job_with_an_index_per_variant():
    suite = load_suite("jobs/ablations/speaker.yaml")
    objects = render_ablation(target(suite=suite))
    validate(objects)
    config_map, job = objects
    assert config_map["data"]["suite.yaml"] == suite.text
    assert job["spec"]["completions"] == len(suite.variants) == 11
    assert job["metadata"]["labels"]["unitvox.dev/variant"] == "speaker"
    args = pod(job)["containers"][0]["args"]
    assert args[:1] == ["ablate"] and "--suite" in args and args[-2:] == ["--shard-count", "11"]


def test_driver_job_runs_the_controller_with_its_own_service_account():
    config_map, driver = render_driver(target(), ["--stage", "evaluate"])
    validate([config_map, driver])
    template = pod(driver)
    assert template["serviceAccountName"] == "unitvox-controller" and template["automountServiceAccountToken"] is True
    args = template["containers"][0]["args"]
    assert args[:2] == ["k8s", "submit"] and "--wait" in args and args[-2:] == ["--stage", "evaluate"]
    assert "nvidia.com/gpu" not in template["containers"][0]["resources"]["limits"]


def test_each_diagnosis_is_a_job_with_the_diagnose_resources():
    objects = render_diagnoses(target("jobs/demo.yaml"), ["training", "data", "all"])
    validate(objects)
    config_map, *diagnoses = objects
    assert config_map["kind"] == "ConfigMap"
    assert [job["metadata"]["labels"]["unitvox.dev/phase"] for job in diagnoses] == ["training", "data", "all"]
    assert {job["metadata"]["labels"]["unitvox.dev/stage"] for job in diagnoses} == {"diagnose"}
    container = pod(diagnoses[0])["containers"][0]
    assert container["args"] == ["diagnose", "training", "--config", CONFIG_FILE, "--run", RUN]
    assert container["resources"]["limits"]["memory"] == "4Gi"  # jobs/demo.yaml: cluster.resources.diagnose
    assert "completionMode" not in diagnoses[0]["spec"]
    assert len({job["metadata"]["name"] for job in diagnoses}) == 3


def test_an_unknown_diagnosis_is_refused_by_name():
    with pytest.raises(ValueError, match="--diagnose 'speakers': known diagnoses are"):
        render_diagnoses(target(), ["speakers"])


def test_demo_config_renders_for_a_cpu_cluster():
    objects = render_pipeline(target("jobs/demo.yaml"))
    validate(objects)
    assert all("nvidia.com/gpu" not in pod(j)["containers"][0]["resources"]["limits"] for j in jobs(objects))


def test_names_are_stable_and_change_with_the_stage_config():
    first = [o["metadata"]["name"] for o in render_pipeline(target())]
    assert first == [o["metadata"]["name"] for o in render_pipeline(target())]
    changed = [o["metadata"]["name"] for o in render_pipeline(target("jobs/base.yaml", "evaluate.max_items=10"))]
    differ = {a for a, b in zip(first, changed) if a != b}
    assert any("evaluate" in name for name in differ) and not any("train" in name for name in differ)


@pytest.mark.parametrize("run, image, message", [
    ("./runs/exp1", IMAGE, "must be an s3:// URI"),
    (RUN, "", "no image"),
])
def test_bad_targets_are_refused_with_the_reason(run, image, message):
    with pytest.raises(ValueError, match=message):
        Target(load("jobs/base.yaml", [INPUT]), run, image)


def test_local_recordings_are_refused_for_prepare():
    with pytest.raises(ValueError, match="prepare.input"):
        render_pipeline(Target(load("jobs/base.yaml", ["prepare.input=/data/raw"]), RUN, IMAGE))


SNAPSHOT_CASES = {
    "base-pipeline": lambda: render_pipeline(target()),
    "base-train-3-nodes": lambda: render_stage(target("jobs/base.yaml", "cluster.training.nodes=3"), "train"),
    "speaker-ablation": lambda: render_ablation(target(suite=load_suite("jobs/ablations/speaker.yaml"))),
    "demo-diagnoses": lambda: render_diagnoses(target("jobs/demo.yaml"), ["all"]),
    # Kueue: every Job suspended and labelled with the queue and the workload priority.
    "demo-pipeline-queued": lambda: render_pipeline(target("jobs/demo.yaml", "cluster.queue=team-gpu",
                                                           "cluster.priority_class=research-high")),
    "base-train-trainjob": lambda: render_stage(target("jobs/base.yaml", "cluster.training.launcher=trainjob",
                                                       "cluster.training.nodes=2", "cluster.queue=team-gpu"), "train"),
    # A unitvox command as a Job (k8s submit --resynthesize): a stage's pod running `unitvox resynthesize`.
    "base-resynthesize": lambda: render_command(target("jobs/base.yaml"), resynthesize_command(
        RUN, inputs=["s3://bucket/mine/"], out="s3://bucket/resynthesized/", speaker="s3://bucket/ref.wav")),
}


@pytest.mark.parametrize("name", sorted(SNAPSHOT_CASES))
def test_rendering_matches_its_snapshot(name):
    text = to_yaml_stream(SNAPSHOT_CASES[name](), header="# Snapshot of unitvox k8s rendering; update with "
                                                          "UNITVOX_UPDATE_SNAPSHOTS=1\n")
    path = SNAPSHOTS / f"{name}.yaml"
    if os.environ.get("UNITVOX_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"rendering changed; review and rerun with UNITVOX_UPDATE_SNAPSHOTS=1 ({path})"


def test_pods_serve_metrics_on_every_interface_while_a_local_run_keeps_to_loopback():
    from unitvox.config import load as load_config

    assert load_config("jobs/demo.yaml").metrics.address == "127.0.0.1"
    assert load_config("jobs/base.yaml").metrics.address == "127.0.0.1"
    assert yaml.safe_load(target().config_text)["metrics"]["address"] == "0.0.0.0"
    chosen = target("jobs/base.yaml", "metrics.address=10.0.0.7")
    assert yaml.safe_load(chosen.config_text)["metrics"]["address"] == "10.0.0.7"
