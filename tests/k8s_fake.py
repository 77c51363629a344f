"""A fake Kubernetes API server over real HTTP, so the cluster client runs its real code paths in tests.

Use (the `fake_kubernetes` fixture in conftest.py starts one):

    with FakeKubernetes() as fake:
        succeed_jobs(fake)  # every Job created from now on completes
        cluster = KubeCluster.connect(fake.namespace, host=fake.url)
        cluster.create(job_manifest)
        fail_job(fake, "other", pod_status=terminated("OOMKilled", 137))

It stores objects and answers create, get, list, delete and pod logs; it never acts on its own
(a test plays the Job controller, Kueue or an operator with the helpers at the end).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

CONTAINER = "main"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
_PATH = re.compile(
    r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+/[^/]+))/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?P<log>/log)?)?"
)
_SELECTOR_TERM = re.compile(r"\s*([\w./-]+)\s*(==|=|!=)\s*([\w./:-]*)\s*")


@dataclass(frozen=True)
class Request:
    """One request the fake answered: query values are plain strings, body the decoded JSON."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None


def now() -> str:
    """The current time as the API writes timestamps."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubernetes:
    """An in-process Kubernetes API server on 127.0.0.1 (a free port), serving from a thread.

    Args:
        namespace: The namespace the scripting helpers use.
        on_job_created: Called with each newly created Job (a dict) before the create is answered,
            so whatever it scripts is visible as soon as `create` returns.
        log_delay: Seconds between lines of a followed log.
    """

    def __init__(self, *, namespace: str = "default", on_job_created: Callable | None = None, log_delay: float = 0.02):
        self.namespace = namespace
        self.on_job_created = on_job_created
        self.log_delay = log_delay
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group/version, plural, ns, name)
        self._logs: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.RLock()
        self._serial = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL, for `KubeCluster.connect(..., host=url)`."""
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubernetes:
        """Start serving in a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval, as `stop()` waits for the next poll.
        serve = {"target": self._server.serve_forever, "kwargs": {"poll_interval": 0.02}, "daemon": True}
        self._thread = threading.Thread(**serve)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Scripting the cluster.

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored objects of one resource ("jobs", "pods", ...), sorted by name."""
        namespace = namespace or self.namespace
        with self._lock:
            found = [obj for (_, kind, ns, _), obj in self._objects.items() if (kind, ns) == (plural, namespace)]
            return copy.deepcopy(sorted(found, key=lambda obj: obj["metadata"]["name"]))

    def stored(self, plural: str, name: str) -> dict[str, Any] | None:
        """A copy of one stored object of the fake's namespace, or None."""
        return next((obj for obj in self.objects(plural) if obj["metadata"]["name"] == name), None)

    def update(self, plural: str, name: str, *, metadata: dict[str, Any] | None = None,
               spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> None:
        """Merge fields into a stored object's `metadata`, `spec` and `status` (any resource, e.g. "trainjobs")."""
        with self._lock:
            obj = next(o for (_, kind, ns, n), o in self._objects.items() if (kind, ns, n) == (plural, self.namespace, name))
            obj["metadata"].update(copy.deepcopy(metadata or {}))
            obj.setdefault("spec", {}).update(copy.deepcopy(spec or {}))
            obj.setdefault("status", {}).update(copy.deepcopy(status or {}))

    def set_job_status(self, name: str, **status: Any) -> None:
        """Merge fields, spelled as in the API (`failedIndexes=...`), into a Job's `status`."""
        with self._lock:
            job = self._objects[("batch/v1", "jobs", self.namespace, name)]
            job.setdefault("status", {}).update(copy.deepcopy(status))

    def add_pod(
        self,
        name: str,
        *,
        labels: dict[str, str],
        phase: str = "Pending",
        status: dict[str, Any] | None = None,
        annotations: dict[str, str] | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """Store a pod with one container named `CONTAINER`; a `phase` inside `status` wins over `phase`."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": dict(labels), "annotations": dict(annotations or {})},
            "spec": {"containers": [{"name": CONTAINER, "image": "unitvox:test"}], "restartPolicy": "Never"},
            "status": {"phase": phase, **copy.deepcopy(status or {})},
        }
        if node:
            pod["spec"]["nodeName"] = node
        return self._store("v1", "pods", self.namespace, pod)

    def set_log(self, pod: str, lines: list[str]) -> None:
        """The lines the pod's log endpoint serves."""
        with self._lock:
            self._logs[(self.namespace, pod)] = list(lines)

    def add_event(self, object_name: str, reason: str, message: str, *, kind: str = "Job") -> None:
        """Store a Warning event about an object, later than every earlier one."""
        serial = next(self._serial)
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{object_name}.{serial:016x}"}}
        event["involvedObject"] = {"kind": kind, "name": object_name, "namespace": self.namespace}
        event.update(reason=reason, message=message, type="Warning", count=1, lastTimestamp=now())
        self._store("v1", "events", self.namespace, event)

    # Serving.

    def _store(self, group_version: str, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        metadata.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(next(self._serial)))
        metadata.setdefault("creationTimestamp", now())
        with self._lock:
            self._objects[(group_version, plural, namespace, metadata["name"])] = obj
            return copy.deepcopy(obj)

    def _handle(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        with self._lock:
            self.requests.append(Request(method, url.path, query, copy.deepcopy(body)))  # as sent, whatever follows
        match = _PATH.fullmatch(url.path)
        if not match:
            return _send(handler, 404, _status(404, "NotFound", f"the server could not find {url.path}"))
        group_version = match["core"] or match["group"]
        where = (group_version, match["plural"], match["namespace"])
        resource = match["plural"] + ("." + group_version.split("/")[0] if "/" in group_version else "")
        if method == "POST" and not match["name"]:
            return self._create(handler, where, resource, body or {})
        if method == "GET" and match["log"]:
            return self._log(handler, match["namespace"], match["name"], query)
        if method == "GET" and not match["name"]:
            return self._list(handler, where, query)
        with self._lock:
            obj = copy.deepcopy(self._objects.get((*where, match["name"])))
        if obj is None:
            return _send(handler, 404, _status(404, "NotFound", f'{resource} "{match["name"]}" not found'))
        if method == "GET":
            return _send(handler, 200, obj)
        if method == "DELETE":
            policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            return self._delete(handler, where, obj, policy)
        return _send(handler, 405, _status(405, "MethodNotAllowed", f"{method} is not supported here"))

    def _create(self, handler: _Handler, where: tuple[str, str, str], resource: str, obj: dict[str, Any]) -> None:
        group_version, plural, namespace = where
        name = obj.setdefault("metadata", {}).get("name")
        if not name:
            return _send(handler, 422, _status(422, "Invalid", f"{resource}: metadata.name: Required value"))
        with self._lock:
            if (group_version, plural, namespace, name) in self._objects:
                message = f'{resource} "{name}" already exists'
                return _send(handler, 409, _status(409, "AlreadyExists", message, name=name, kind=plural))
            if plural == "jobs":
                obj.setdefault("status", {})
                if (obj.get("spec") or {}).get("suspend"):  # as the Job controller marks a suspended Job
                    obj["status"]["conditions"] = [_condition("Suspended", "JobSuspended", "Job suspended")]
            created = self._store(group_version, plural, namespace, obj)
        if plural == "jobs" and self.on_job_created is not None:
            try:
                self.on_job_created(copy.deepcopy(created))
            except Exception as error:  # noqa: BLE001 - a broken test hook must fail the request loudly
                self.errors.append(f"on_job_created({name}): {error!r}")
                return _send(handler, 500, _status(500, "InternalError", self.errors[-1]))
        _send(handler, 201, created)

    def _list(self, handler: _Handler, where: tuple[str, str, str], query: dict[str, str]) -> None:
        items = self.objects(where[1], where[2])
        try:
            items = [obj for obj in items if _selected(query.get("labelSelector", ""), obj["metadata"].get("labels"))]
            items = [obj for obj in items if _selected(query.get("fieldSelector", ""), obj, fields=True)]
        except ValueError as error:
            return _send(handler, 400, _status(400, "BadRequest", str(error)))
        _send(handler, 200, {"apiVersion": where[0], "kind": "List", "metadata": {}, "items": items})

    def _delete(self, handler: _Handler, where: tuple[str, str, str], obj: dict[str, Any], policy: str | None) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            del self._objects[(*where, name)]
            # Like batch/v1, a Job's pods are orphaned unless the delete asks for propagation.
            if where[1] == "jobs" and policy in ("Background", "Foreground"):
                for key, pod in list(self._objects.items()):
                    if key[1] == "pods" and (pod["metadata"].get("labels") or {}).get("job-name") == name:
                        del self._objects[key]
        details = {"name": name, "kind": where[1], "uid": obj["metadata"]["uid"]}
        _send(handler, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": details})

    def _log(self, handler: _Handler, namespace: str, pod: str, query: dict[str, str]) -> None:
        with self._lock:
            known = ("v1", "pods", namespace, pod) in self._objects
            lines = list(self._logs.get((namespace, pod), []))
        if not known:
            return _send(handler, 404, _status(404, "NotFound", f'pods "{pod}" not found'))
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        if query.get("follow") != "true":
            return _send(handler, 200, "".join(line + "\n" for line in lines), content_type="text/plain")
        # A followed log arrives in chunks as the container writes it, as from a real API server.
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for line in lines:
                data = (line + "\n").encode()
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
                time.sleep(self.log_delay)
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeKubernetes

    def do_GET(self) -> None:  # noqa: N802 - the names http.server dispatches to
        self.fake._handle(self, self.command)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet; `FakeKubernetes.requests` has the record."""


def _send(handler: BaseHTTPRequestHandler, code: int, payload: Any, *, content_type: str = "application/json") -> None:
    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _status(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    """A failure `Status` body as the API server sends it."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    return {**status, "message": message, "reason": reason, "details": details, "code": code}


def _selected(selector: str, source: dict[str, Any] | None, *, fields: bool = False) -> bool:
    """Whether labels (or, with `fields`, an object's dotted fields) match `a=b,c!=d`."""
    for term in filter(None, selector.split(",")):
        match = _SELECTOR_TERM.fullmatch(term)
        if not match:
            raise ValueError(f"unable to parse requirement: {term!r} (the fake knows =, == and !=)")
        key, operator, value = match.groups()
        found: Any = source or {}
        for part in key.split(".") if fields else [key]:
            found = found.get(part) if isinstance(found, dict) else None
        if (found is not None and str(found) == value) == (operator == "!="):
            return False
    return True


# Pod statuses as the kubelet reports them, for `add_pod(status=...)` and `fail_job(pod_status=...)`.


def terminated(reason: str = "Error", exit_code: int = 1, message: str | None = None) -> dict[str, Any]:
    """A pod whose container has exited (phase Failed, or Succeeded for exit code 0)."""
    state = {"reason": reason, "exitCode": exit_code, "startedAt": now(), "finishedAt": now()}
    if message:
        state["message"] = message
    phase = "Succeeded" if exit_code == 0 else "Failed"
    return {"phase": phase, "containerStatuses": [_container({"terminated": state})]}


def waiting(
    reason: str, message: str | None = None, *, last: dict[str, Any] | None = None, restart_count: int = 0
) -> dict[str, Any]:
    """A pod whose container waits (ImagePullBackOff ...); `last` is a `terminated()` before it."""
    container = _container({"waiting": {"reason": reason, **({"message": message} if message else {})}})
    if last is not None:
        container["lastState"] = last["containerStatuses"][0]["state"]
    container["restartCount"] = restart_count
    return {"phase": "Running" if restart_count else "Pending", "containerStatuses": [container]}


def unschedulable(message: str, *, since: str | None = None) -> dict[str, Any]:
    """A pending pod the scheduler cannot place, since `since` (an API timestamp; default now)."""
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"phase": "Pending", "conditions": [{**condition, "lastTransitionTime": since or now()}]}


def preempted(reason: str = "PreemptionByScheduler") -> dict[str, Any]:
    """A pod killed by a disruption (preemption, eviction, node drain), not by its own failure."""
    condition = {"type": "DisruptionTarget", "status": "True", "reason": reason, "lastTransitionTime": now()}
    return {**terminated("Error", 143), "conditions": [condition]}


def _container(state: dict[str, Any]) -> dict[str, Any]:
    container = {"name": CONTAINER, "image": "unitvox:test", "imageID": "", "ready": False, "restartCount": 0}
    return {**container, "state": state}


# Job simulation.


def add_job_pod(fake: FakeKubernetes, job_name: str, index: int, *, status: dict[str, Any]) -> dict[str, Any]:
    """Store a pod of a stored Job, labelled as the Job controller labels its pods."""
    job = fake.stored("jobs", job_name)
    assert job is not None, f"no Job {job_name!r} in the fake"
    uid = job["metadata"]["uid"]
    labels = {**job["spec"]["template"].get("metadata", {}).get("labels", {}), "job-name": job_name}
    labels.update({"batch.kubernetes.io/job-name": job_name, "controller-uid": uid})
    annotations = {}
    if job["spec"].get("completionMode") == "Indexed":
        labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
    name = f"{job_name}-{index}-{uuid.uuid4().hex[:5]}"
    return fake.add_pod(name, labels=labels, annotations=annotations, status=status, node="node-1")


def succeed_job(fake: FakeKubernetes, job_name: str) -> None:
    """Complete a stored Job: a succeeded pod per completion index, then the Complete condition."""
    completions = fake.stored("jobs", job_name)["spec"].get("completions") or 1
    for index in range(completions):
        add_job_pod(fake, job_name, index, status=terminated("Completed", 0))
    conditions = [_condition("SuccessCriteriaMet", "CompletionsReached"), _condition("Complete", "CompletionsReached")]
    indexes = "0" if completions == 1 else f"0-{completions - 1}"
    fake.set_job_status(job_name, active=0, succeeded=completions, completedIndexes=indexes, conditions=conditions)


def fail_job(
    fake: FakeKubernetes,
    job_name: str,
    *,
    index: int = 0,
    pod_status: dict[str, Any] | None = None,
    reason: str = "BackoffLimitExceeded",
    message: str = "Job has reached the specified backoff limit",
) -> dict[str, Any]:
    """Fail a stored Job through one failed pod (`pod_status`, by default exit code 1); returns the pod."""
    pod = add_job_pod(fake, job_name, index, status=pod_status or terminated("Error", 1))
    failed = (fake.stored("jobs", job_name)["status"].get("failed") or 0) + 1
    conditions = [_condition("FailureTarget", reason, message), _condition("Failed", reason, message)]
    fake.set_job_status(job_name, active=0, failed=failed, failedIndexes=str(index), conditions=conditions)
    return pod


def admit_job(fake: FakeKubernetes, job_name: str) -> None:
    """Play Kueue admitting a queued Job: unsuspend it; the Job controller then sets `startTime`."""
    resumed = _condition("Suspended", "JobResumed", "Job resumed")
    fake.update("jobs", job_name, spec={"suspend": False}, status={"startTime": now(), "conditions": [
        {**resumed, "status": "False"}]})


def queued_jobs(fake: FakeKubernetes) -> list[str]:
    """The names of the stored Jobs that are suspended (waiting for admission), oldest first."""
    jobs = [job for job in fake.objects("jobs") if job["spec"].get("suspend")]
    return [job["metadata"]["name"] for job in sorted(jobs, key=lambda job: int(job["metadata"]["resourceVersion"]))]


def succeed_jobs(fake: FakeKubernetes) -> None:
    """Make every Job created from now on complete at once."""
    fake.on_job_created = lambda job: succeed_job(fake, job["metadata"]["name"])


def fail_jobs(fake: FakeKubernetes, **failure: Any) -> None:
    """Make every Job created from now on fail at once; `failure` as for `fail_job`."""
    fake.on_job_created = lambda job: fail_job(fake, job["metadata"]["name"], **failure)


def _condition(kind: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
