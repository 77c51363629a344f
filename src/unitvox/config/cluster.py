"""How stages run on Kubernetes: image, namespace, resources per stage, scheduling and Job policy.

Render with: unitvox k8s render --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from unitvox.config.common import require

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
TRAINING_LAUNCHERS = ("job", "pytorchjob", "trainjob")
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass
class Toleration:
    """A Kubernetes toleration, e.g. `{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}`."""

    key: str = ""
    operator: str = "Exists"
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None

    def check(self, key: str) -> None:
        require(self.operator in TOLERATION_OPERATORS, f"{key}.operator", f"choose one of {TOLERATION_OPERATORS}")
        require(self.effect in TOLERATION_EFFECTS, f"{key}.effect", f"choose one of {TOLERATION_EFFECTS}")
        require(self.operator == "Equal" or not self.value, f"{key}.value", "only an Equal toleration has a value")


@dataclass
class Resources:
    """What one pod of a stage asks for and where it may run.

    `gpus` become `nvidia.com/gpu` requests and limits; `shm` sizes the memory-backed `/dev/shm`
    (data loader workers and NCCL need more than a container's default 64 MiB); `scratch` sizes
    the writable `/scratch` volume (the root filesystem is read-only).
    """

    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    shm: str = "1Gi"
    scratch: str = "20Gi"
    deadline_seconds: int = 6 * 3600
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)

    def check(self, key: str) -> None:
        for name in ("cpu", "memory", "shm", "scratch"):
            value = getattr(self, name)
            require(bool(_QUANTITY.match(value)), f"{key}.{name}", f"not a Kubernetes quantity: {value!r} (e.g. 4, 500m, 16Gi)")
        require(self.gpus >= 0, f"{key}.gpus", "must not be negative")
        require(self.deadline_seconds >= 60, f"{key}.deadline_seconds", "must be at least 60")
        for index, toleration in enumerate(self.tolerations):
            toleration.check(f"{key}.tolerations[{index}]")


def _gpu_pod() -> Resources:
    return Resources(cpu="8", memory="64Gi", gpus=1, shm="16Gi", scratch="100Gi", deadline_seconds=7 * 24 * 3600)


@dataclass
class StageResources:
    """Resources per stage; a key set here replaces the stage's default, the others stay."""

    prepare: Resources = field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))
    tokenize: Resources = field(default_factory=lambda: Resources(cpu="4", memory="24Gi", gpus=1, shm="4Gi"))
    bpe: Resources = field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))
    train: Resources = field(default_factory=_gpu_pod)
    evaluate: Resources = field(default_factory=lambda: Resources(cpu="4", memory="16Gi", gpus=1, shm="4Gi"))
    samples: Resources = field(default_factory=lambda: Resources(cpu="4", memory="16Gi", gpus=1, shm="4Gi"))
    diagnose: Resources = field(default_factory=lambda: Resources(cpu="4", memory="16Gi", gpus=1, shm="4Gi"))
    ablate: Resources = field(default_factory=_gpu_pod)
    controller: Resources = field(default_factory=lambda: Resources(cpu="250m", memory="512Mi", shm="64Mi",
                                                                    scratch="1Gi", deadline_seconds=14 * 24 * 3600))
    # A command Job (`unitvox k8s submit --command ...`); unset, it runs with `samples` (the same work).
    use: Resources | None = None

    def check(self, key: str) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) is not None:
                getattr(self, name).check(f"{key}.{name}")


@dataclass
class TrainingConfig:
    """Distributed training: `nodes` pods of `resources.train.gpus` GPUs each, rendezvous at pod 0.

    `launcher: job` renders an Indexed Job with a headless Service; `pytorchjob` renders a Kubeflow
    PyTorchJob for clusters that run the training operator; `trainjob` renders a Kubeflow Trainer v2
    TrainJob that references `runtime` (a `runtime_kind`: ClusterTrainingRuntime or TrainingRuntime).
    """

    nodes: int = 1
    launcher: str = "job"
    rendezvous_port: int = 29500
    runtime: str = "unitvox-torch"
    runtime_kind: str = "TrainingRuntime"

    def check(self, key: str) -> None:
        require(self.nodes >= 1, f"{key}.nodes", "must be at least 1")
        require(self.launcher in TRAINING_LAUNCHERS, f"{key}.launcher", f"choose one of {TRAINING_LAUNCHERS}")
        require(1024 <= self.rendezvous_port <= 65535, f"{key}.rendezvous_port", "must be a port in 1024..65535")
        require(bool(_DNS_SUBDOMAIN.match(self.runtime)), f"{key}.runtime", f"not a Kubernetes name: {self.runtime!r}")
        require(self.runtime_kind in RUNTIME_KINDS, f"{key}.runtime_kind", f"choose one of {RUNTIME_KINDS}")


@dataclass
class ClusterConfig:
    """The Kubernetes side of a run; none of it changes what a stage computes.

    `queue` names a Kueue LocalQueue: every Job is then created suspended and labelled
    `kueue.x-k8s.io/queue-name`, and runs once Kueue admits it. `priority_class` is the pods'
    PriorityClass without a queue, and the Kueue WorkloadPriorityClass (label
    `kueue.x-k8s.io/priority-class`) with one.
    """

    namespace: str = "unitvox"
    image: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account: str = "unitvox-job"
    controller_service_account: str = "unitvox-controller"
    s3_secret: str = "unitvox-s3"
    settings_config_map: str = "unitvox-settings"
    queue: str = ""
    priority_class: str = ""
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    termination_grace_seconds: int = 300
    backoff_limit: int = 3
    max_failed_indexes: int = 0
    unschedulable_timeout_seconds: int = 900
    poll_seconds: float = 10.0
    wait_for_inputs_seconds: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    resources: StageResources = field(default_factory=StageResources)

    def check(self, key: str) -> None:
        for name in ("namespace", "service_account", "controller_service_account", "s3_secret"):
            value = getattr(self, name)
            require(bool(_DNS_LABEL.match(value)), f"{key}.{name}", f"not a Kubernetes name: {value!r}")
        for name in ("queue", "priority_class"):
            value = getattr(self, name)
            require(not value or bool(_DNS_SUBDOMAIN.match(value)), f"{key}.{name}", f"not a Kubernetes name: {value!r}")
        require(self.image_pull_policy in PULL_POLICIES, f"{key}.image_pull_policy", f"choose one of {PULL_POLICIES}")
        require(self.ttl_seconds_after_finished >= 0, f"{key}.ttl_seconds_after_finished", "must not be negative")
        require(self.termination_grace_seconds >= 30, f"{key}.termination_grace_seconds",
                "must be at least 30: training writes a checkpoint when it is told to stop")
        require(self.backoff_limit >= 0, f"{key}.backoff_limit", "must not be negative")
        require(self.max_failed_indexes >= 0, f"{key}.max_failed_indexes", "must not be negative")
        require(self.unschedulable_timeout_seconds >= 0, f"{key}.unschedulable_timeout_seconds", "must not be negative")
        require(self.poll_seconds > 0, f"{key}.poll_seconds", "must be positive")
        require(self.wait_for_inputs_seconds >= 0, f"{key}.wait_for_inputs_seconds", "must not be negative")
        self.training.check(f"{key}.training")
        self.resources.check(f"{key}.resources")
