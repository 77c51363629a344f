"""What the controller reads of Jobs and pods: frozen records parsed from the API's JSON.

Use: JobStatus.from_dict(job), PodStatus.from_dict(pod); the cluster client returns these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class Condition:
    """One entry of an object's `status.conditions`."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition: datetime | None = None


@dataclass(frozen=True)
class JobStatus:
    """What the controller needs to know about a batch/v1 Job (or a PyTorchJob or TrainJob, `kind`).

    `suspended` is the Job's `spec.suspend`: a Job of a Kueue queue is created suspended and
    unsuspended when Kueue admits it, and the Job controller then sets `started` (`status.startTime`).
    """

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    completions: int | None = None
    conditions: tuple[Condition, ...] = ()
    failed_indexes: str | None = None
    completed_indexes: str | None = None
    created: datetime | None = None
    suspended: bool = False
    started: datetime | None = None
    kind: str = "Job"

    @property
    def finished(self) -> str | None:
        """"Complete" or "Failed" once the Job controller says so, else None.

        `SuccessCriteriaMet` and `FailureTarget` come earlier, while pods may still be terminating,
        so they do not count as finished.
        """
        done = (c.type for c in self.conditions if c.type in ("Complete", "Failed") and c.status == "True")
        return next(done, None)

    @property
    def state(self) -> str:
        """queued (suspended, waiting for Kueue), admitted (pods not ready yet), running, complete or failed."""
        if self.finished:
            return self.finished.lower()
        if self.suspended:
            return "queued"
        return "running" if self.ready or (self.active and self.kind != "Job") else "admitted"

    def waited(self, now: datetime) -> float | None:
        """Seconds from creation to admission (to `now` while still queued); None when unknown."""
        if self.created is None:
            return None
        end = now if self.suspended else self.started
        return max(0.0, (end - self.created).total_seconds()) if end else None

    @classmethod
    def from_dict(cls, job: dict[str, Any]) -> JobStatus:
        """Read a Job as the API returns it (camelCase JSON)."""
        metadata, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
        return cls(
            name=metadata.get("name", ""),
            labels=dict(metadata.get("labels") or {}),
            active=status.get("active") or 0,
            succeeded=status.get("succeeded") or 0,
            failed=status.get("failed") or 0,
            ready=status.get("ready") or 0,
            completions=spec.get("completions"),
            conditions=_conditions(status),
            failed_indexes=status.get("failedIndexes"),
            completed_indexes=status.get("completedIndexes"),
            created=parse_time(metadata.get("creationTimestamp")),
            suspended=bool(spec.get("suspend")),
            started=parse_time(status.get("startTime")),
        )

    @classmethod
    def from_workload(cls, obj: dict[str, Any]) -> JobStatus:
        """Read a PyTorchJob or TrainJob: its suspension and its conditions, spelt as for a Job.

        A PyTorchJob says Succeeded where a Job says Complete; a TrainJob says Complete. Both say
        Suspended while suspended and Running (PyTorchJob) or nothing more (TrainJob) once resumed.
        """
        metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        suspended = spec.get("suspend", (spec.get("runPolicy") or {}).get("suspend"))
        renamed = {"Succeeded": "Complete"}
        conditions = tuple(Condition(renamed.get(c.type, c.type), c.status, c.reason, c.message, c.last_transition)
                           for c in _conditions(status))
        resumed = next((c.last_transition for c in conditions if c.type == "Suspended" and c.status == "False"), None)
        running = any(c.type == "Running" and c.status == "True" for c in conditions)
        return cls(name=metadata.get("name", ""), labels=dict(metadata.get("labels") or {}), active=int(running),
                   conditions=conditions, created=parse_time(metadata.get("creationTimestamp")),
                   suspended=bool(suspended), started=resumed or parse_time(status.get("startTime")),
                   kind=obj.get("kind", ""))


@dataclass(frozen=True)
class PodStatus:
    """A pod of a Job, with the state of its main container flattened out.

    The container fields describe `container`: the pod's first container, or a failing init container
    that keeps it from starting. While the container waits to restart, `terminated_*` and `exit_code`
    come from its previous run, so an OOM kill stays visible during CrashLoopBackOff.
    """

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    completion_index: int | None = None
    node: str | None = None
    created: datetime | None = None
    conditions: tuple[Condition, ...] = ()
    unschedulable_since: datetime | None = None
    unschedulable_message: str | None = None
    disruption: bool = False
    container: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    terminated_reason: str | None = None
    terminated_message: str | None = None
    exit_code: int | None = None
    restart_count: int = 0

    @classmethod
    def from_dict(cls, pod: dict[str, Any]) -> PodStatus:
        """Read a Pod as the API returns it (camelCase JSON)."""
        metadata, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        labels = dict(metadata.get("labels") or {})
        index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX, labels.get(COMPLETION_INDEX))
        conditions = _conditions(status)
        not_scheduled = ("PodScheduled", "False", "Unschedulable")
        unschedulable = next((c for c in conditions if (c.type, c.status, c.reason) == not_scheduled), None)
        container = _main_container(spec, status)
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and not terminated:
            terminated = (container.get("lastState") or {}).get("terminated")
        waiting, terminated = waiting or {}, terminated or {}
        return cls(
            name=metadata.get("name", ""),
            labels=labels,
            phase=status.get("phase"),
            completion_index=int(index) if index is not None and str(index).isdigit() else None,
            node=spec.get("nodeName"),
            created=parse_time(metadata.get("creationTimestamp")),
            conditions=conditions,
            unschedulable_since=unschedulable.last_transition if unschedulable else None,
            unschedulable_message=unschedulable.message if unschedulable else None,
            disruption=any(c.type == "DisruptionTarget" and c.status == "True" for c in conditions),
            container=container.get("name"),
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message"),
            terminated_reason=terminated.get("reason"),
            terminated_message=terminated.get("message"),
            exit_code=terminated.get("exitCode"),
            restart_count=container.get("restartCount") or 0,
        )


def _main_container(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The status of the container the pod exists for (see `PodStatus`); {} before there is one."""
    statuses = status.get("containerStatuses") or [{}]
    first = ((spec.get("containers") or [{}])[0]).get("name")
    main = next((s for s in statuses if s.get("name") == first), statuses[0])
    if main.get("state") and _waiting(main) != "PodInitializing":
        return main
    for init in status.get("initContainerStatuses") or []:
        exit_code = ((init.get("state") or {}).get("terminated") or {}).get("exitCode")
        if _waiting(init) not in (None, "PodInitializing") or exit_code not in (None, 0):
            return init
    return main


def _waiting(container: dict[str, Any]) -> str | None:
    return ((container.get("state") or {}).get("waiting") or {}).get("reason")


def _conditions(status: dict[str, Any]) -> tuple[Condition, ...]:
    found = status.get("conditions") or []
    fields = ("type", "status", "reason", "message")
    return tuple(Condition(*(c.get(f) for f in fields), parse_time(c.get("lastTransitionTime"))) for c in found)


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp ("2024-05-01T12:00:00Z", MicroTime too) as an aware datetime."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
