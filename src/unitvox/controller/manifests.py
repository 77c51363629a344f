"""Building blocks of the Kubernetes objects unitvox renders: labels, the container, the pod, the Job.

Pure functions from typed config to plain dicts; nothing here talks to a cluster. See render.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from unitvox import __version__, exitcodes
from unitvox.config.cluster import ClusterConfig, Resources

CONTAINER = "unitvox"
CONFIG_DIR = "/etc/unitvox"
SCRATCH_DIR = "/scratch"
TINI = "/usr/bin/tini"
RUN_AS = 10001  # the image's non-root user
LABEL_PREFIX = "unitvox.dev"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
WAIT_FOR_INPUTS_ENV = exitcodes.WAIT_FOR_INPUTS_ENV
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def drop_none(**values: Any) -> dict[str, Any]:
    """A dict of the given keyword values, without those that are None."""
    return {key: value for key, value in values.items() if value is not None}


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:length]


def object_name(*parts: str, unique: str, limit: int = 52) -> str:
    """A DNS-1123 name from `parts` and a hash of `unique`; at most `limit` characters.

    52 leaves room for the `-<index>` that an Indexed Job's pod hostnames add within 63.
    """
    digest = short_hash(unique)
    slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    slug = slug[: limit - len(digest) - 1].strip("-")
    return f"{slug}-{digest}" if slug else f"uvx-{digest}"


def labels(*, run: str, stage: str, phase: str = "", variant: str = "base", config_hash: str = "") -> dict[str, str]:
    """The labels on every object and pod of a run; every value is bounded and checked."""
    values = {
        "app.kubernetes.io/name": "unitvox",
        "app.kubernetes.io/instance": run,
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/part-of": "unitvox",
        "app.kubernetes.io/managed-by": "unitvox",
        "app.kubernetes.io/version": __version__,
        f"{LABEL_PREFIX}/run": run,
        f"{LABEL_PREFIX}/stage": stage,
        f"{LABEL_PREFIX}/phase": phase or None,
        f"{LABEL_PREFIX}/variant": variant,
        f"{LABEL_PREFIX}/config-hash": config_hash[:12] or None,
    }
    result = drop_none(**values)
    for key, value in result.items():
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"label {key}={value!r} is not a valid Kubernetes label value")
    return result


def queue_labels(cluster: ClusterConfig) -> dict[str, str]:
    """Kueue's labels for a workload of `cluster.queue` (none without a queue)."""
    if not cluster.queue:
        return {}
    return drop_none(**{QUEUE_LABEL: cluster.queue, PRIORITY_LABEL: cluster.priority_class or None})


def queued_metadata(cluster: ClusterConfig, *, name: str, object_labels: dict[str, str]) -> dict[str, Any]:
    """The metadata of a workload object (Job, PyTorchJob, TrainJob): its labels plus Kueue's."""
    return {"name": name, "namespace": cluster.namespace, "labels": {**object_labels, **queue_labels(cluster)}}


@dataclass(frozen=True)
class PodSpec:
    """What differs between the pods unitvox renders; the rest comes from the cluster config."""

    command: tuple[str, ...]
    args: tuple[str, ...]
    resources: Resources
    config_map: str
    metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    field_env: dict[str, str] = field(default_factory=dict)  # name -> fieldPath
    service_account: str = ""
    automount_token: bool = False
    subdomain: str | None = None
    container: str = CONTAINER


def resource_requirements(resources: Resources) -> dict[str, dict[str, Any]]:
    """Requests equal limits (Guaranteed QoS): a stage that outgrows its memory fails as OOMKilled, clearly."""
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpus:
        amounts["nvidia.com/gpu"] = str(resources.gpus)  # a quantity: the API client accepts strings only
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container(cluster: ClusterConfig, image: str, spec: PodSpec) -> dict[str, Any]:
    env = [{"name": name, "value": value} for name, value in _scratch_env(spec.resources).items()]
    env += [{"name": name, "value": value} for name, value in spec.env.items()]
    env += [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in spec.field_env.items()]
    return drop_none(
        name=spec.container,
        image=image,
        imagePullPolicy=cluster.image_pull_policy,
        command=list(spec.command),
        args=list(spec.args),
        env=env,
        envFrom=[
            {"secretRef": {"name": cluster.s3_secret}},
            {"configMapRef": {"name": cluster.settings_config_map, "optional": True}},
        ],
        ports=[{"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"}] if spec.metrics_port else None,
        resources=resource_requirements(spec.resources),
        volumeMounts=[
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        securityContext={
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    )


def _scratch_env(resources: Resources) -> dict[str, str]:
    """Point every cache and temporary folder at the writable scratch volume."""
    threads = _whole_cpus(resources.cpu)
    return {
        "HOME": SCRATCH_DIR,
        "TMPDIR": SCRATCH_DIR,
        "XDG_CACHE_HOME": f"{SCRATCH_DIR}/cache",
        "HF_HOME": f"{SCRATCH_DIR}/huggingface",
        "MPLCONFIGDIR": f"{SCRATCH_DIR}/matplotlib",
        "NUMBA_CACHE_DIR": f"{SCRATCH_DIR}/numba",
        # Threads per process follow the CPU request, not the node's core count.
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def _whole_cpus(quantity: str) -> int:
    if quantity.endswith("m"):
        return max(1, int(float(quantity[:-1]) // 1000))
    return max(1, int(float(quantity)))


def pod_template(cluster: ClusterConfig, image: str, spec: PodSpec, pod_labels: dict[str, str],
                 restart_policy: str = "Never") -> dict[str, Any]:
    resources = spec.resources
    pod = drop_none(
        restartPolicy=restart_policy,
        serviceAccountName=spec.service_account or cluster.service_account,
        automountServiceAccountToken=spec.automount_token,
        enableServiceLinks=False,
        terminationGracePeriodSeconds=cluster.termination_grace_seconds,
        # With a queue the priority is Kueue's WorkloadPriorityClass (a label on the Job), not the pods'.
        priorityClassName=(cluster.priority_class or None) if not cluster.queue else None,
        subdomain=spec.subdomain,
        nodeSelector=dict(resources.node_selector) or None,
        tolerations=[_toleration(t) for t in resources.tolerations] or None,
        imagePullSecrets=[{"name": name} for name in cluster.image_pull_secrets] or None,
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        containers=[container(cluster, image, spec)],
        volumes=[
            {"name": "config", "configMap": {"name": spec.config_map}},
            {"name": "scratch", "emptyDir": {"sizeLimit": resources.scratch}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": resources.shm}},
        ],
    )
    return {"metadata": {"labels": dict(pod_labels)}, "spec": pod}


def _toleration(toleration: Any) -> dict[str, Any]:
    return drop_none(
        key=toleration.key or None,
        operator=toleration.operator,
        value=toleration.value or None,
        effect=toleration.effect or None,
        tolerationSeconds=toleration.toleration_seconds,
    )


def job(cluster: ClusterConfig, image: str, spec: PodSpec, *, name: str, job_labels: dict[str, str],
        completions: int | None = None, per_index_retries: bool = True, queued: bool = True) -> dict[str, Any]:
    """A batch/v1 Job; `completions` makes it an Indexed Job with one pod per index.

    Preemptions and node drains (the DisruptionTarget condition) do not count as failures; a
    permanent exit code fails the whole Job at once instead of retrying it. With `cluster.queue`
    (and `queued`), the Job is created suspended and labelled for Kueue, which unsuspends it on admission.
    """
    if completions is not None and completions < 1:
        raise ValueError(f"an Indexed Job needs at least one completion, got {completions}")
    body = drop_none(
        ttlSecondsAfterFinished=cluster.ttl_seconds_after_finished,
        activeDeadlineSeconds=spec.resources.deadline_seconds,
        podReplacementPolicy="Failed",  # a replacement starts only once the old pod has checkpointed and gone
        podFailurePolicy={"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": spec.container, "operator": "In",
                                                  "values": list(exitcodes.PERMANENT)}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        template=pod_template(cluster, image, spec, job_labels),
        suspend=True if queued and cluster.queue else None,
    )
    if completions is None:
        body["backoffLimit"] = cluster.backoff_limit
    else:
        body.update(completionMode="Indexed", completions=completions, parallelism=completions)
        if per_index_retries:
            body.update(backoffLimitPerIndex=cluster.backoff_limit, maxFailedIndexes=cluster.max_failed_indexes)
        else:
            body["backoffLimit"] = cluster.backoff_limit
    metadata = queued_metadata(cluster, name=name, object_labels=job_labels) if queued else {
        "name": name, "namespace": cluster.namespace, "labels": dict(job_labels)}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": body}


def config_map(cluster: ClusterConfig, *, name: str, files: dict[str, str], map_labels: dict[str, str]) -> dict[str, Any]:
    """The run's resolved config (and ablation suite) that every pod mounts at /etc/unitvox."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": dict(map_labels)},
        "immutable": True,  # its name carries a hash of its content
        "data": dict(files),
    }


def headless_service(cluster: ClusterConfig, *, name: str, job_name: str, port: int,
                     service_labels: dict[str, str]) -> dict[str, Any]:
    """Gives pod 0 of a training Job the stable DNS name `<job>-0.<service>` for the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": dict(service_labels)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # ranks must find each other before any is ready
            "selector": {"batch.kubernetes.io/job-name": job_name},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
