"""Training as a Kubeflow workload: a PyTorchJob (training operator v1) or a TrainJob (Trainer v2).

Pure functions from a render Target to manifests, as in render.py, which picks one by
`cluster.training.launcher`. Both run the argv the Job launcher runs, under torchrun, whose
rendezvous the operator sets (PET_* variables); with `cluster.queue`, both are created suspended
and labelled for Kueue, which integrates either.
"""

from __future__ import annotations

from typing import Any

from unitvox.controller import manifests as m
from unitvox.controller.local import Step
from unitvox.controller.target import Target

TRAINER_API = "trainer.kubeflow.org/v1alpha1"
TRAINER_NODE = "node"  # the replicated job (and its container) that trains, in every torch runtime
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every pod of a TrainJob's JobSet
# The S3 Secret's keys, one env entry each: a TrainJob's trainer takes `env`, not `envFrom`.
S3_KEYS = {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_ENDPOINT_URL": True,
           "AWS_DEFAULT_REGION": True}  # name -> optional


def torchrun_argv(step: Step) -> tuple[str, ...]:
    """`-m unitvox train ...`; torchrun's own parser reads --run as its --run-path, hence --run-root."""
    return ("-m", "unitvox", *("--run-root" if part == "--run" else part for part in step.argv[1:]))


def pytorch_job(target: Target, step: Step, name: str, job_labels: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """A Kubeflow PyTorchJob: a Master and `nodes - 1` Workers, `resources.train.gpus` processes each."""
    config = target.config
    cluster = config.cluster
    gpus = max(cluster.resources.train.gpus, 1)
    spec = m.PodSpec(command=(m.TINI, "--", "torchrun"), args=torchrun_argv(step),
                     resources=cluster.resources.train, config_map=target.config_map_name,
                     metrics_port=config.metrics.port, env=env, container="pytorch")
    # ExitCode: codes 1-127 (bad config 2, a bug) are permanent, 128+ (SIGTERM, SIGKILL) are retried.
    template = m.pod_template(cluster, target.image, spec, job_labels, restart_policy="OnFailure")
    replicas = {"Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template}}
    if cluster.training.nodes > 1:
        replicas["Worker"] = {"replicas": cluster.training.nodes - 1, "restartPolicy": "ExitCode", "template": template}
    run_policy = m.drop_none(
        backoffLimit=cluster.backoff_limit,
        ttlSecondsAfterFinished=cluster.ttl_seconds_after_finished,
        activeDeadlineSeconds=cluster.resources.train.deadline_seconds,
        cleanPodPolicy="None",
        suspend=True if cluster.queue else None,
    )
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": m.queued_metadata(cluster, name=name, object_labels=job_labels),
        "spec": {"nprocPerNode": str(gpus), "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


def train_job(target: Target, step: Step, name: str, job_labels: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """A Trainer v2 TrainJob on `cluster.training.runtime`: `nodes` pods of `resources.train.gpus` processes.

    Written against the TrainJob API of Trainer v2.1 (`spec.runtimeRef`, `spec.trainer`,
    `spec.podTemplateOverrides`). The trainer fields carry the image, argv, environment and
    resources; an override of the runtime's `node` pods adds the labels, service account, volumes
    (run config, scratch, /dev/shm), scheduling and pull secrets. What an override cannot set in v2.1
    (the security contexts, the metrics port, the settings config map) comes from the runtime:
    k8s/overlays/trainer ships one, `unitvox-torch`, that sets them as the Job launcher does.
    """
    config = target.config
    cluster = config.cluster
    spec = m.PodSpec(command=(m.TINI, "--", "torchrun"), args=torchrun_argv(step),
                     resources=cluster.resources.train, config_map=target.config_map_name,
                     metrics_port=config.metrics.port, env=env, container=TRAINER_NODE)
    pod = m.pod_template(cluster, target.image, spec, job_labels)["spec"]
    (container,) = pod["containers"]
    secret_env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": cluster.s3_secret, "key": key,
                                                               **({"optional": True} if optional else {})}}}
                  for key, optional in S3_KEYS.items()]
    trainer = {
        "image": target.image,
        "command": container["command"],
        "args": container["args"],
        "env": container["env"] + secret_env,
        "numNodes": cluster.training.nodes,
        "numProcPerNode": max(cluster.resources.train.gpus, 1),
        "resourcesPerNode": container["resources"],
    }
    override_spec = m.drop_none(
        serviceAccountName=pod["serviceAccountName"],
        nodeSelector=pod.get("nodeSelector"),
        tolerations=pod.get("tolerations"),
        imagePullSecrets=pod.get("imagePullSecrets"),
        volumes=pod["volumes"],
        containers=[{"name": TRAINER_NODE, "volumeMounts": container["volumeMounts"]}],
    )
    override = {"targetJobs": [{"name": TRAINER_NODE}], "metadata": {"labels": dict(job_labels)}, "spec": override_spec}
    runtime = cluster.training
    body = m.drop_none(
        runtimeRef={"name": runtime.runtime, "apiGroup": TRAINER_API.split("/")[0], "kind": runtime.runtime_kind},
        trainer=trainer,
        podTemplateOverrides=[override],
        suspend=True if cluster.queue else None,
    )
    return {"apiVersion": TRAINER_API, "kind": "TrainJob",
            "metadata": m.queued_metadata(cluster, name=name, object_labels=job_labels), "spec": body}
