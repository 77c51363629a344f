"""The kustomize base in k8s/ and its MinIO overlay: schema-valid for the supported Kubernetes range,
least-privilege RBAC, and pods that run non-root with limits.

Run: .venv/bin/python -m pytest tests/k8s/test_kustomize.py
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from system_tools import needs

pytestmark = needs("kubectl")

REPO = Path(__file__).resolve().parents[2]
BASE = "k8s"
MINIO = "k8s/overlays/minio"
TRAINER = "k8s/overlays/trainer"
# The range of Kubernetes versions the README names as supported.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
# API groups of custom resources, which have no schema in kubernetes-validate (PodMonitor, PrometheusRule).
CUSTOM_RESOURCE_GROUPS = {"monitoring.coreos.com", "kubeflow.org", "trainer.kubeflow.org"}
NAMESPACE = "unitvox"
SECRET = "unitvox-s3"
SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
MINIO_ENDPOINT = "http://minio.unitvox.svc.cluster.local:9000"
CONTROLLER_RIGHTS = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "services"): {"create", "get", "list", "delete"},
    ("", "configmaps"): {"create", "get", "list", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"get", "list", "watch"},
    ("kubeflow.org", "pytorchjobs"): {"create", "get", "list", "watch", "delete"},
    ("trainer.kubeflow.org", "trainjobs"): {"create", "get", "list", "watch", "delete"},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


@cache
def render(path: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize path` prints, in order."""
    result = subprocess.run(["kubectl", "kustomize", path], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def find(objects, kind: str, name: str) -> dict:
    matches = [item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workloads(objects):
    return [item for item in objects if item["kind"] in WORKLOADS]


def secret_names(spec: dict) -> set[str]:
    """Names of every Secret a pod spec's containers read through env or envFrom."""
    names = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        names |= {source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source}
        names |= {variable["valueFrom"]["secretKeyRef"]["name"] for variable in container.get("env", [])
                  if "secretKeyRef" in variable.get("valueFrom", {})}
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
    return names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [BASE, MINIO, TRAINER])
def test_every_object_is_valid_for_the_supported_kubernetes_versions(path, version):
    objects = render(path)
    assert objects, f"{path} rendered nothing"
    for item in objects:
        label = f"{item['kind']}/{item['metadata']['name']}"
        group = item["apiVersion"].rpartition("/")[0]
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert group in CUSTOM_RESOURCE_GROUPS, f"{label}: no schema for {item['apiVersion']} in {version}"
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path}: {label} is invalid for Kubernetes {version}: {error.message}")


@pytest.mark.parametrize("path", [BASE, MINIO, TRAINER])
def test_base_objects_are_there_and_namespaced(path):
    objects = render(path)
    for kind, name in [("Namespace", NAMESPACE), ("ServiceAccount", "unitvox-controller"),
                       ("ServiceAccount", "unitvox-job"), ("Role", "unitvox-controller"),
                       ("RoleBinding", "unitvox-controller"), ("ConfigMap", "unitvox-settings"), ("Secret", SECRET)]:
        find(objects, kind, name)
    for item in objects:
        if item["kind"] not in CLUSTER_SCOPED:
            assert item["metadata"].get("namespace") == NAMESPACE, f"{item['kind']}/{item['metadata']['name']}"


def test_rbac_has_no_wildcards_and_no_cluster_rights():
    objects = render(MINIO)
    assert not [item for item in objects if item["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    for role in (item for item in objects if item["kind"] == "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"Role {role['metadata']['name']}: wildcard in {field}"


def test_controller_role_grants_exactly_what_submit_needs():
    role = find(render(BASE), "Role", "unitvox-controller")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == CONTROLLER_RIGHTS


def test_controller_role_is_bound_to_the_controller_account_only():
    objects = render(BASE)
    bindings = [item for item in objects if item["kind"] == "RoleBinding"]
    binding = find(objects, "RoleBinding", "unitvox-controller")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "unitvox-controller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "unitvox-controller", "namespace": NAMESPACE}]
    bound = [subject["name"] for item in bindings for subject in item["subjects"]]
    assert "unitvox-job" not in bound


def test_stage_account_mounts_no_token():
    objects = render(BASE)
    assert find(objects, "ServiceAccount", "unitvox-job")["automountServiceAccountToken"] is False
    assert find(objects, "ServiceAccount", "unitvox-controller").get("automountServiceAccountToken", True) is True


def test_settings_and_secret_hold_the_expected_keys():
    objects = render(BASE)
    settings = find(objects, "ConfigMap", "unitvox-settings")["data"]
    assert settings["UNITVOX_LOG_LEVEL"] == "INFO"
    assert settings["AWS_DEFAULT_REGION"] == "us-east-1"
    assert not (SECRET_KEYS - {"AWS_DEFAULT_REGION"}) & set(settings), "credentials belong in the Secret"
    secret = find(objects, "Secret", SECRET)
    assert secret["type"] == "Opaque"
    assert set(secret["stringData"]) == SECRET_KEYS
    assert "data" not in secret


def test_minio_overlay_points_the_secret_at_the_in_cluster_service():
    objects = render(MINIO)
    secret = find(objects, "Secret", SECRET)
    assert secret["stringData"]["AWS_ENDPOINT_URL"] == MINIO_ENDPOINT
    assert set(secret["stringData"]) == SECRET_KEYS  # the patch changes one key and keeps the others
    assert find(render(BASE), "Secret", SECRET)["stringData"]["AWS_ENDPOINT_URL"] != MINIO_ENDPOINT

    service = find(objects, "Service", "minio")
    assert [port["port"] for port in service["spec"]["ports"]] == [9000]
    deployment = find(objects, "Deployment", "minio")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()
    container_ports = {port["name"]: port["containerPort"] for port in pod_spec(deployment)["containers"][0]["ports"]}
    assert container_ports[service["spec"]["ports"][0]["targetPort"]] == 9000
    assert pod_spec(deployment)["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    claims = {volume["persistentVolumeClaim"]["claimName"] for volume in pod_spec(deployment)["volumes"]
              if "persistentVolumeClaim" in volume}
    assert claims == {find(objects, "PersistentVolumeClaim", "minio-data")["metadata"]["name"]}
    find(objects, "Job", "minio-create-bucket")


def test_workloads_read_the_s3_secret_by_name():
    objects = render(MINIO)
    assert workloads(objects)
    for workload in workloads(objects):
        assert secret_names(pod_spec(workload)) == {SECRET}, workload["metadata"]["name"]


@pytest.mark.parametrize("path", [BASE, MINIO])
def test_pods_run_non_root_read_only_with_limits_and_pinned_images(path):
    for workload in workloads(render(path)):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            label = f"{name}/{container['name']}"
            image = container["image"]
            assert "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")), label
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), label
            assert "memory" in resources["limits"], label
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["readOnlyRootFilesystem"] is True, label
            assert context["capabilities"]["drop"] == ["ALL"], label
            assert not context.get("privileged", False), label


def test_the_trainer_runtime_sets_what_a_trainjob_cannot():
    from unitvox.config import Config
    from unitvox.controller import kubeflow
    from unitvox import exitcodes

    runtime = find(render(TRAINER), "TrainingRuntime", Config().cluster.training.runtime)
    assert Config().cluster.training.runtime_kind == "TrainingRuntime"
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == kubeflow.TRAINER_NODE
    assert replicated["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    job_spec = replicated["template"]["spec"]
    for version in KUBERNETES_VERSIONS:  # the replicated job's template is a batch/v1 Job spec
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "check"},
                                      "spec": job_spec}, version, strict=True)
    fail = next(rule for rule in job_spec["podFailurePolicy"]["rules"] if rule["action"] == "FailJob")
    assert fail["onExitCodes"]["values"] == list(exitcodes.PERMANENT)
    assert fail["onExitCodes"]["containerName"] == kubeflow.TRAINER_NODE
    pod = job_spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["name"] == kubeflow.TRAINER_NODE
    assert container["ports"] == [{"name": "metrics", "containerPort": Config().metrics.port, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"configMapRef": {"name": "unitvox-settings", "optional": True}} in container["envFrom"]


def relabel_kept(endpoint: dict, pod_labels: dict[str, str]) -> bool:
    """Whether Prometheus keeps a pod's target after the endpoint's drop/keep relabelings."""
    import re

    meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", key): value
            for key, value in pod_labels.items()}
    for rule in endpoint.get("relabelings", []):
        joined = rule.get("separator", ";").join(meta.get(name, "") for name in rule["sourceLabels"])
        matched = re.fullmatch(rule.get("regex", "(.*)"), joined) is not None
        if (rule["action"] == "drop" and matched) or (rule["action"] == "keep" and not matched):
            return False
    return True


def test_only_rank_zero_pods_of_a_training_are_scrape_targets():
    from unitvox.config import load
    from unitvox.controller.render import Target, render_stage

    (endpoint,) = find(render(BASE), "PodMonitor", "unitvox-train")["spec"]["podMetricsEndpoints"]
    index = "batch.kubernetes.io/job-completion-index"
    config = load("jobs/base.yaml", ["prepare.input=s3://b/raw", "cluster.training.nodes=3"])
    job = render_stage(Target(config, "s3://b/runs/r", "img:1"), "train")[-1]
    labels = job["spec"]["template"]["metadata"]["labels"]
    kept = [i for i in range(3) if relabel_kept(endpoint, {**labels, index: str(i)})]
    assert kept == [0], "pods of ranks other than 0 serve no /metrics and are no targets"
    assert relabel_kept(endpoint, labels), "single-pod training (not Indexed) is scraped"
    pytorch = {**labels, "training.kubeflow.org/replica-type": "worker"}
    assert not relabel_kept(endpoint, pytorch) and relabel_kept(endpoint, {**pytorch, "training.kubeflow.org/replica-type": "master"})
    ablation = {**labels, "app.kubernetes.io/component": "ablate", index: "5"}
    assert relabel_kept(endpoint, ablation), "every index of an ablation suite trains as rank 0"
