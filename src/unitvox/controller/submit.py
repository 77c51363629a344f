"""Submit a run's Jobs to a cluster in order, follow them, and say why one failed.

Run: unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG

The controller creates each stage's Jobs only when the stage before has finished, skips stages
whose `_SUCCESS.json` already matches, and adopts Jobs that exist (a resubmission never
duplicates work). It talks to the cluster only through `cluster.Cluster`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from unitvox import exitcodes
from unitvox.controller import manifests as m
from unitvox.controller.cluster import AlreadyExists, Cluster, JobStatus, PodStatus
from unitvox.controller.kubeflow import JOBSET_NAME_LABEL
from unitvox.controller.render import (
    Target, render_ablation, render_command, render_config_map, render_diagnoses, render_stage,
)
from unitvox.controller.use_jobs import UseCommand
from unitvox.layout import (
    EVALUATE, EVALUATE_AUDIO, EVALUATE_JUNIT, EVALUATE_METRICS, EVALUATE_REPORT, EVALUATE_SUMMARY,
)
from unitvox.stages import pending
from unitvox.store import Store

WORKLOAD_KINDS = ("Job", "PyTorchJob", "TrainJob")
IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
START_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
LOG_LINES = 20
RECREATE_ATTEMPTS = 60  # polls to wait for a deleted Job's name to come free


class SubmitFailed(RuntimeError):
    """A stage's Job failed, or could never run; `code` is the exit code to report."""

    def __init__(self, message: str, code: int = exitcodes.FAILED):
        super().__init__(message)
        self.code = code


@dataclass
class StageOutcome:
    stage: str
    status: str  # skipped, done or failed
    detail: str = ""
    jobs: list[str] = field(default_factory=list)


def pod_problem(pod: PodStatus, now: datetime, unschedulable_timeout: float,
                admitted: datetime | None = None) -> str | None:
    """Why a pod will never run by itself (a bad image, a missing Secret, no node for it), or None.

    An unschedulable pod's wait counts from `admitted` at the earliest: time a Job spent queued for
    Kueue's admission is not time the scheduler failed to place it.
    """
    if pod.waiting_reason in IMAGE_ERRORS:
        return f"pod {pod.name}: image pull error {pod.waiting_reason}: {pod.waiting_message or 'no message'}"
    if pod.waiting_reason in START_ERRORS:
        return f"pod {pod.name}: cannot start its container, {pod.waiting_reason}: {pod.waiting_message or 'no message'}"
    if pod.unschedulable_since is not None:
        since = max(pod.unschedulable_since, admitted) if admitted else pod.unschedulable_since
        waited = (now - since).total_seconds()
        if waited > unschedulable_timeout:
            return (f"pod {pod.name}: unschedulable for {waited:.0f} s (over cluster.unschedulable_timeout_seconds="
                    f"{unschedulable_timeout:g}): {pod.unschedulable_message or 'no message'}")
    return None


def ensure(cluster: Cluster, obj: dict[str, Any]) -> None:
    """Create an object named by a hash of its content; one that exists already is the same."""
    try:
        cluster.create(obj)
    except AlreadyExists:
        pass


def failure_reason(pod: PodStatus) -> str:
    """One line on how a pod's container ended: OOMKilled, an exit code and its meaning, a disruption."""
    if pod.disruption:
        return f"pod {pod.name} was disrupted (preempted or evicted); that does not count as a failure"
    if pod.terminated_reason == "OOMKilled":
        return f"pod {pod.name}: OOMKilled (exit code {pod.exit_code}): it needed more memory than its limit"
    meaning = {exitcodes.CONFIG: "bad config or input", exitcodes.GATES_FAILED: "quality gates failed",
               exitcodes.UNHEALTHY: "training stopped as unhealthy", exitcodes.INTERRUPTED: "stopped by SIGTERM"}.get(pod.exit_code or 0, pod.terminated_reason or "error")
    detail = f": {pod.terminated_message.strip()}" if pod.terminated_message else ""
    return f"pod {pod.name}: exit code {pod.exit_code} ({meaning}){detail}"


class Controller:
    """Runs stages on a cluster one after another; `pending_reason` and the clocks are injectable for tests."""

    def __init__(self, cluster: Cluster, target: Target, store: Store, *, echo: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep,
                 pending_reason: Callable[[str], str | None] | None = None) -> None:
        self.cluster, self.target, self.store = cluster, target, store
        self.echo, self.sleep = echo, sleep
        self.cluster_config = target.config.cluster
        self.pending_reason = pending_reason or (lambda stage: pending(target.config, store, stage))

    # -- whole runs --------------------------------------------------------------------------

    def submit(self, stages: list[str]) -> list[StageOutcome]:
        """Run `stages` in order; raises SubmitFailed at the first failure, after reporting it."""
        ensure(self.cluster, render_config_map(self.target))
        return [self.run_stage(stage) for stage in stages]

    def run_stage(self, stage: str) -> StageOutcome:
        reason = "forced" if self.target.force else self.pending_reason(stage)
        if reason is None:
            self.echo(f"[{stage}] skipped: _SUCCESS.json matches the config and inputs")
            return StageOutcome(stage, "skipped", "up to date")
        self.echo(f"[{stage}] submitting ({reason})")
        objects = render_stage(self.target, stage)
        jobs = [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]
        if self.target.force or self._final_job_is_stale(jobs[-1]):
            for job in jobs:
                self._delete(job)
        for obj in objects:
            if obj["kind"] == "Service":
                ensure(self.cluster, obj)
            else:
                self._start(obj)
                self._follow(obj, stage)
        still = self.pending_reason(stage)
        if still is not None and not self.target.force:
            raise SubmitFailed(f"[{stage}] its Jobs finished but the stage is not done: {still}")
        self.echo(f"[{stage}] done")
        return StageOutcome(stage, "done", reason, [job["metadata"]["name"] for job in jobs])

    def submit_ablation(self, upstream: list[str]) -> list[StageOutcome]:
        """The stages the variants share, then the suite's Indexed Job (an index per variant)."""
        outcomes = self.submit(upstream)
        objects = render_ablation(self.target)
        ensure(self.cluster, objects[0])
        job = objects[1]
        if self.target.force:
            self._delete(job)
        self._start(job)
        self._follow(job, "ablate")
        return [*outcomes, StageOutcome("ablate", "done", self.target.suite.name, [job["metadata"]["name"]])]

    def submit_diagnoses(self, kinds: list[str]) -> list[StageOutcome]:
        """A Job per diagnosis, one after another; a finished Job of an earlier diagnosis is replaced."""
        objects = render_diagnoses(self.target, kinds)
        ensure(self.cluster, objects[0])
        outcomes = []
        for kind, job in zip(kinds, objects[1:]):
            self.echo(f"[diagnose {kind}] submitting")
            self._start(job, replace=True)
            self._follow(job, f"diagnose {kind}")
            outcomes.append(StageOutcome(f"diagnose {kind}", "done", kind, [job["metadata"]["name"]]))
        return outcomes

    def submit_command(self, command: UseCommand, *, follow: bool = True) -> StageOutcome:
        """One Job running a unitvox command, followed until it ends unless `follow` is False.

        A finished Job of the same command line runs again: what it reads (an s3:// prefix) may have changed.
        """
        config_map, job = render_command(self.target, command)
        ensure(self.cluster, config_map)
        label = f"use {command.name}"
        self.echo(f"[{label}] submitting: unitvox {' '.join(command.argv)}")
        self._start(job, replace=True)
        if not follow:
            return StageOutcome(label, "submitted", command.name, [job["metadata"]["name"]])
        self._follow(job, "use")
        self.echo(f"[{label}] done")
        return StageOutcome(label, "done", command.name, [job["metadata"]["name"]])

    # -- one Job ------------------------------------------------------------------------------

    def _final_job_is_stale(self, job: dict[str, Any]) -> bool:
        """A finished last Job of a stage that is not done means its outputs were lost: run it again."""
        return self._finished(job) == "Complete"

    def _start(self, job: dict[str, Any], *, replace: bool = False) -> None:
        """Create the Job, or adopt it when it runs or has completed; a failed one (any finished
        one with `replace`) is deleted and created again."""
        name = job["metadata"]["name"]
        finished = self._finished(job)
        if finished == "Complete" and not replace:
            self.echo(f"  {name}: adopted (already complete)")
            return
        deleted = finished is not None
        if deleted:
            self.echo(f"  {name}: {finished.lower()} earlier; deleting it to run again")
            self._delete(job)
        elif (status := self._status(job)) is not None:
            self.echo(f"  {name}: adopted ({'queued' if status.suspended else 'running'})")
            return
        for _ in range(RECREATE_ATTEMPTS):
            try:
                self.cluster.create(job)
                queue = self.cluster_config.queue
                self.echo(f"  {name}: created" + (f", suspended in queue {queue} until Kueue admits it" if queue else ""))
                return
            except AlreadyExists:
                if not deleted:  # another controller created it in the meantime: follow that one
                    self.echo(f"  {name}: adopted (created elsewhere)")
                    return
                self.sleep(self.cluster_config.poll_seconds)  # the deleted Job is still going away
        raise SubmitFailed(f"{name}: a Job of that name still exists after deleting it; try again later")

    def _delete(self, job: dict[str, Any]) -> None:
        if self.cluster.delete(job["kind"], job["metadata"]["name"]):
            self.echo(f"  {job['metadata']['name']}: deleted")

    def _status(self, job: dict[str, Any]) -> JobStatus | None:
        """The workload's status as it is now, read the same way for Jobs, PyTorchJobs and TrainJobs."""
        name = job["metadata"]["name"]
        if job["kind"] == "Job":
            return self.cluster.job(name)
        stored = self.cluster.get(job["kind"], name)
        return JobStatus.from_workload(stored) if stored is not None else None

    def _finished(self, job: dict[str, Any]) -> str | None:
        status = self._status(job)
        return status.finished if status else None

    def _follow(self, job: dict[str, Any], stage: str) -> None:
        """Poll until the Job finishes; fail fast on a pod that can never run.

        A queued Job (suspended until Kueue admits it) is only waited for: it has no pods, and the
        clock for unschedulable pods starts at its admission.
        """
        name = job["metadata"]["name"]
        selector = _pod_selector(job)
        last, admission_seen, admitted = "", False, None
        while True:
            status = self._status(job)
            finished = status.finished if status else None
            if finished == "Complete":
                return
            now = datetime.now(timezone.utc)
            if status is not None and status.suspended and not finished:
                progress = "queued, waiting for Kueue to admit it"
            else:
                if not admission_seen and status is not None and status.labels.get(m.QUEUE_LABEL):
                    admitted = status.started or now
                    self.echo(f"  {name}: admitted after {status.waited(now) or 0:.0f} s in the queue")
                admission_seen = True
                pods = self.cluster.pods(selector)
                if finished == "Failed":
                    raise self._failure(job, stage, pods)
                for pod in pods:
                    problem = pod_problem(pod, now, self.cluster_config.unschedulable_timeout_seconds, admitted)
                    if problem:
                        self._delete(job)  # its pods would wait forever, holding a quota
                        raise SubmitFailed(f"[{stage}] {name} cannot run: {problem}\n{self._events(pod.name)}")
                progress = _progress(status if job["kind"] == "Job" else None, pods)
            if progress != last:
                self.echo(f"  {name}: {progress}")
                last = progress
            self.sleep(self.cluster_config.poll_seconds)

    def _failure(self, job: dict[str, Any], stage: str, pods: list[PodStatus]) -> SubmitFailed:
        name = job["metadata"]["name"]
        failed = [pod for pod in pods if pod.phase == "Failed" and not pod.disruption] or pods
        lines = [f"[{stage}] {name} failed"]
        status = self.cluster.job(name) if job["kind"] == "Job" else None
        if status:
            lines += [f"  {c.reason}: {c.message}" for c in status.conditions if c.type == "Failed" and c.reason]
        code = exitcodes.FAILED
        for pod in failed[-1:]:
            lines.append("  " + failure_reason(pod))
            if pod.exit_code in exitcodes.PERMANENT:
                code = pod.exit_code
            log = list(self.cluster.logs(pod.name, tail_lines=LOG_LINES))
            if log:
                lines.append(f"  last {len(log)} log lines of {pod.name}:")
                lines += [f"    {line}" for line in log]
            lines.append(self._events(pod.name))
        lines.append(f"  more: unitvox k8s logs --run {self.target.run_uri} --stage {stage}")
        return SubmitFailed("\n".join(line for line in lines if line), code)

    def _events(self, pod: str) -> str:
        events = self.cluster.events(pod)[-5:]
        return "\n".join(f"  event: {event}" for event in events)


def _pod_selector(job: dict[str, Any]) -> str:
    if job["kind"] == "PyTorchJob":
        return f"training.kubeflow.org/job-name={job['metadata']['name']}"
    if job["kind"] == "TrainJob":
        return f"{JOBSET_NAME_LABEL}={job['metadata']['name']}"
    return f"job-name={job['metadata']['name']}"


def _progress(status: JobStatus | None, pods: list[PodStatus]) -> str:
    if status is None:
        return f"{len(pods)} pods: " + ", ".join(sorted({pod.phase or '?' for pod in pods}))
    total = status.completions or 1
    return f"{status.succeeded}/{total} done, {status.active} running, {status.failed} failed"


# What CI publishes of an evaluation: the gates, the summary, the figures, and the page to listen to
# with the audio it links to (EVALUATE_AUDIO holds each utterance's waves and mel image).
RESULT_KEYS = (EVALUATE_JUNIT, EVALUATE_SUMMARY, EVALUATE_METRICS, EVALUATE_REPORT)


def copy_results(store: Store, destination: str, keys: tuple[str, ...] = RESULT_KEYS,
                 folders: tuple[str, ...] = (EVALUATE_AUDIO,)) -> list[str]:
    """Copy the evaluation's reports from the run into a local folder, for CI to publish.

    Each key keeps its path below `evaluate/` (report.html, audio/<segment>.original.wav ...), so the
    relative links of report.html still work from the folder; every file under `folders` is copied too.
    """
    folder = Path(destination)
    copied = []
    wanted = [key for key in keys if store.exists(key)]
    wanted += [key for prefix in folders for key in sorted(store.list(f"{prefix}/"))]
    for key in wanted:
        target = folder / key.removeprefix(f"{EVALUATE}/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.read_bytes(key))
        copied.append(str(target))
    folder.mkdir(parents=True, exist_ok=True)
    return copied
