"""The cluster client: the one module that imports `kubernetes`, behind the small `Cluster` interface.

Use: cluster = KubeCluster.connect("unitvox"); cluster.create(job_manifest); cluster.job("unitvox-prepare")

The rest of the controller sees plain dicts (objects as the API spells them) and the frozen records
below, so it can be tested without a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Protocol

import urllib3
import yaml
from kubernetes import client, config

from unitvox.controller.objects import COMPLETION_INDEX, Condition, JobStatus, PodStatus, parse_time

__all__ = ["COMPLETION_INDEX", "Condition", "JobStatus", "PodStatus", "Cluster", "KubeCluster", "ClusterError",
           "AlreadyExists", "NotFound", "KINDS"]


# kind -> (typed API class, method suffix); the typed APIs accept manifests as dicts.
_TYPED_KINDS = {
    "Job": (client.BatchV1Api, "namespaced_job"),
    "Service": (client.CoreV1Api, "namespaced_service"),
    "ConfigMap": (client.CoreV1Api, "namespaced_config_map"),
}
# kind -> (group, version, plural) for custom resources, served through CustomObjectsApi.
_CUSTOM_KINDS = {"PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
                 "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}
KINDS = (*_TYPED_KINDS, *_CUSTOM_KINDS)


class ClusterError(RuntimeError):
    """A request to the Kubernetes API failed.

    Attributes:
        status: The HTTP status of the API's answer, or None when there was no answer.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AlreadyExists(ClusterError):
    """The object to create exists already (HTTP 409)."""


class NotFound(ClusterError):
    """The object does not exist (HTTP 404)."""


class Cluster(Protocol):
    """The operations the controller needs from a cluster, all in one namespace."""

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the object; raise `AlreadyExists` when its name is taken. Returns it as stored."""
        ...

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the API returns it, or None when there is none."""
        ...

    def job(self, name: str) -> JobStatus | None:
        """The Job's status, or None when there is no such Job."""
        ...

    def jobs(self, label_selector: str) -> list[JobStatus]:
        """The Jobs matching a label selector such as "app=unitvox,run=demo"."""
        ...

    def pods(self, label_selector: str) -> list[PodStatus]:
        """The pods matching a label selector such as "job-name=unitvox-prepare"."""
        ...

    def logs(
        self, pod: str, *, container: str | None = None, tail_lines: int | None = None, follow: bool = False
    ) -> Iterator[str]:
        """A pod's log lines (without newlines); with `follow`, lines as they are written until it ends."""
        ...

    def delete(self, kind: str, name: str) -> bool:
        """Delete the object and what it owns (pods of a Job); False when there was nothing to delete."""
        ...

    def events(self, object_name: str) -> list[str]:
        """The events about an object, oldest first, as "reason: message"."""
        ...

    def names(self, kind: str, label_selector: str) -> list[str]:
        """The names of the objects of `kind` matching a label selector."""
        ...

    def objects(self, kind: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of `kind` matching a label selector, as the API returns them."""
        ...


class KubeCluster:
    """`Cluster` over the official Kubernetes client, in one namespace.

    Responses are read as the API's own JSON rather than the client's models: fields newer than the
    installed client survive, and a partial object never fails model validation on the way in.
    """

    def __init__(self, api: client.ApiClient, namespace: str, *, timeout: float = 30.0) -> None:
        self.namespace = namespace
        self.timeout = timeout
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    @classmethod
    def connect(
        cls, namespace: str, *, kubeconfig: str | None = None, context: str | None = None, host: str | None = None
    ) -> KubeCluster:
        """Connect to a cluster: an explicit host, the pod's service account, or a kubeconfig.

        Args:
            namespace: Where every object is created and looked up.
            kubeconfig: A kubeconfig file; by default $KUBECONFIG or ~/.kube/config.
            context: A context of the kubeconfig instead of its current one.
            host: An API URL used as is, without credentials (a local proxy, or a test server).

        Raises:
            ClusterError: The configuration cannot be loaded; the message names the file and context.
        """
        configuration = client.Configuration()
        if host is not None:
            configuration.host = host.rstrip("/")
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException as error:
                raise ClusterError(f"cannot use the pod's service account to reach Kubernetes: {error}") from error
        else:
            source = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            try:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
            except (config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as error:
                which = f"context {context!r}" if context else "its current context"
                raise ClusterError(f"cannot load kubeconfig {source} ({which}): {error}") from error
        return cls(client.ApiClient(configuration), namespace)

    @property
    def host(self) -> str:
        """The API server's URL."""
        return self._api.configuration.host

    def close(self) -> None:
        """Close the connection pool."""
        self._api.close()

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a Job, Service, ConfigMap, PyTorchJob or TrainJob from its manifest; returns it as stored.

        Raises:
            ValueError: The kind is not one of `KINDS`, or the manifest does not fit the client's schema.
            AlreadyExists: An object of that kind and name exists.
            ClusterError: Any other refusal or a network failure.
        """
        kind, name = manifest.get("kind", ""), (manifest.get("metadata") or {}).get("name", "")
        self._check(kind)
        method, where = self._target(kind, "create")
        try:
            return self._json(f"create {kind} {name!r}", method, namespace=self.namespace, body=manifest, **where)
        except ValueError as error:
            # Client versions with typed models validate dict bodies against the schema before sending.
            raise ValueError(f"{kind} {name!r} does not fit the Kubernetes schema: {error}") from error

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """See `Cluster.get`."""
        self._check(kind)
        method, where = self._target(kind, "read")
        try:
            return self._json(f"get {kind} {name!r}", method, name=name, namespace=self.namespace, **where)
        except NotFound:
            return None

    def job(self, name: str) -> JobStatus | None:
        """See `Cluster.job`."""
        job = self.get("Job", name)
        return JobStatus.from_dict(job) if job is not None else None

    def jobs(self, label_selector: str) -> list[JobStatus]:
        """See `Cluster.jobs`."""
        list_jobs, _ = self._target("Job", "list")
        listing = self._json(f"list Jobs {label_selector!r}", list_jobs, self.namespace, label_selector=label_selector)
        return [JobStatus.from_dict(item) for item in listing.get("items") or []]

    def pods(self, label_selector: str) -> list[PodStatus]:
        """See `Cluster.pods`."""
        list_pods = self._core.list_namespaced_pod
        listing = self._json(f"list pods {label_selector!r}", list_pods, self.namespace, label_selector=label_selector)
        return [PodStatus.from_dict(item) for item in listing.get("items") or []]

    def logs(
        self, pod: str, *, container: str | None = None, tail_lines: int | None = None, follow: bool = False
    ) -> Iterator[str]:
        """A pod's log lines, without their newlines.

        The request is made here, so a missing pod raises `NotFound` at the call; lines are then
        read as they arrive, which is what `follow` needs. Closing the iterator early closes the stream.
        """
        what = f"read the log of pod {pod!r}"
        # A followed log stays open as long as the container runs, so it gets no overall timeout.
        options = {"container": container, "tail_lines": tail_lines, "follow": follow or None}
        if follow:
            options["_request_timeout"] = None
        response = self._request(what, self._core.read_namespaced_pod_log, pod, self.namespace, **options)
        return self._lines(what, response)

    def delete(self, kind: str, name: str) -> bool:
        """Delete the object; background propagation removes a Job's pods too. False when there was none."""
        self._check(kind)
        method, where = self._target(kind, "delete")
        options = {"name": name, "namespace": self.namespace, "propagation_policy": "Background", **where}
        try:
            response = self._request(f"delete {kind} {name!r}", method, **options)
        except NotFound:
            return False
        _ = response.data  # read the answer, or the pooled connection hands it to the next request
        response.release_conn()
        return True

    def names(self, kind: str, label_selector: str) -> list[str]:
        """The names of the objects of `kind` matching a label selector."""
        return [item["metadata"]["name"] for item in self.objects(kind, label_selector)]

    def objects(self, kind: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of `kind` matching a label selector, as the API returns them."""
        self._check(kind)
        method, where = self._target(kind, "list")
        listing = self._json(f"list {kind}", method, namespace=self.namespace, label_selector=label_selector, **where)
        return list(listing.get("items") or [])

    def events(self, object_name: str) -> list[str]:
        """See `Cluster.events`."""
        selector = f"involvedObject.name={object_name}"
        list_events = self._core.list_namespaced_event
        listing = self._json(f"events of {object_name!r}", list_events, self.namespace, field_selector=selector)
        # Core events carry lastTimestamp, newer ones only eventTime; sorted() keeps ties in API order.
        items = sorted(listing.get("items") or [], key=_event_time)
        return [f"{e.get('reason') or 'Event'}: {(e.get('message') or '').strip()}" for e in items]

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unsupported kind {kind!r}; the cluster client handles {', '.join(KINDS)}")

    def _target(self, kind: str, verb: str) -> tuple[Callable[..., Any], dict[str, str]]:
        """The client method for a verb on a kind, and the keyword arguments that locate the kind."""
        if kind in _CUSTOM_KINDS:
            group, version, plural = _CUSTOM_KINDS[kind]
            method = getattr(self._custom, f"{'get' if verb == 'read' else verb}_namespaced_custom_object")
            return method, {"group": group, "version": version, "plural": plural}
        api_class, suffix = _TYPED_KINDS[kind]
        return getattr(api_class(self._api), f"{verb}_{suffix}"), {}

    def _request(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client method for its raw urllib3 response, turning failures into `ClusterError`s."""
        # Unset options (None) are left out, so the client's own defaults apply.
        options = {"_request_timeout": self.timeout, **kwargs}
        options = {key: value for key, value in options.items() if value is not None}
        try:
            return method(*args, _preload_content=False, **options)
        except client.ApiException as error:
            raise _api_error(what, error) from error
        except urllib3.exceptions.HTTPError as error:
            raise self._network_error(what, error) from error

    def _json(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = self._request(what, method, *args, **kwargs)
        try:
            return json.loads(response.data)
        except ValueError as error:
            raise ClusterError(f"{what}: the API at {self.host} did not answer with JSON") from error
        finally:
            response.release_conn()

    def _lines(self, what: str, response: Any) -> Iterator[str]:
        try:
            for line in response:
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")
        except urllib3.exceptions.HTTPError as error:
            raise self._network_error(what, error) from error
        finally:
            response.close()

    def _network_error(self, what: str, error: Exception) -> ClusterError:
        reason = getattr(error, "reason", None) or error
        return ClusterError(f"{what}: cannot reach the Kubernetes API at {self.host}: {reason}")


def _api_error(what: str, error: client.ApiException) -> ClusterError:
    """A `ClusterError` carrying the API's own message (the `message` of its Status body)."""
    message = error.reason or "no reason given"
    try:
        body = json.loads(error.body or "")
        message = body.get("message") or message
    except (ValueError, AttributeError):
        pass
    kinds = {404: NotFound, 409: AlreadyExists}
    return kinds.get(error.status, ClusterError)(f"{what}: {message} (HTTP {error.status})", status=error.status)


def _event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp")
    return parse_time(stamp) or datetime.min.replace(tzinfo=timezone.utc)
