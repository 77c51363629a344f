"""Render a run's Kubernetes objects: pure functions from config to manifests, no API calls.

Run: unitvox k8s render --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG > pipeline.yaml

Every phase of a stage is one Job whose pods run exactly the argv the local runner runs; a sharded
phase is an Indexed Job whose pods take their shard from `JOB_COMPLETION_INDEX`. The run's
resolved config travels in a ConfigMap mounted at /etc/unitvox, so no local file is needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml

from unitvox.config.cluster import ClusterConfig, Resources
from unitvox.controller import kubeflow
from unitvox.controller import manifests as m
from unitvox.controller.local import Step, plan
from unitvox.controller.target import Target
from unitvox.controller.use_jobs import UseCommand

CONFIG_FILE = f"{m.CONFIG_DIR}/config.yaml"
SUITE_FILE = f"{m.CONFIG_DIR}/suite.yaml"


def render_pipeline(target: Target, stages: list[str] | None = None) -> list[dict[str, Any]]:
    """The config map, then every Job (and Service) of `stages` in the order they must run."""
    chosen = stages or target.config.pipeline.stages
    if "prepare" in chosen and not target.config.prepare.input.startswith("s3://"):
        raise ValueError(f"prepare.input {target.config.prepare.input!r}: on Kubernetes the recordings must be "
                         "under an s3:// prefix (pass --set prepare.input=s3://bucket/raw)")
    objects = [render_config_map(target)]
    for stage in chosen:
        objects += render_stage(target, stage)
    return objects


def render_config_map(target: Target) -> dict[str, Any]:
    files = {"config.yaml": target.config_text}
    if target.suite:
        files["suite.yaml"] = target.suite.text
    return m.config_map(target.config.cluster, name=target.config_map_name, files=files,
                        map_labels=m.labels(run=target.run, stage="config"))


def render_stage(target: Target, stage: str) -> list[dict[str, Any]]:
    """One stage's objects: a Job per phase, or the training Job and its rendezvous Service."""
    if stage == "train":
        return render_training(target)
    return [_phase_job(target, step) for step in plan(target.config, config_uri=CONFIG_FILE, run_uri=target.run_uri,
                                                       stage=stage, force=target.force)]


def job_name(target: Target, stage: str, phase: str, variant: str = "base") -> str:
    """Stable for a run, stage and stage config, so a resubmission finds (adopts) its Jobs."""
    unique = "\n".join((target.run_uri, stage, phase, variant, target.config.stage_hash(stage)))
    parts = ("uvx", stage, phase) if variant == "base" else ("uvx", stage, variant)
    return m.object_name(*parts, target.run[:14], unique=unique)


def _phase_job(target: Target, step: Step) -> dict[str, Any]:
    cluster = target.config.cluster
    spec = m.PodSpec(
        command=(m.TINI, "--", step.argv[0]),
        args=step.argv[1:],
        resources=getattr(cluster.resources, step.stage),
        config_map=target.config_map_name,
        metrics_port=target.config.metrics.port,
        env=_wait_env(target),
    )
    job_labels = m.labels(run=target.run, stage=step.stage, phase=step.phase,
                          config_hash=target.config.stage_hash(step.stage))
    return m.job(cluster, target.image, spec, name=job_name(target, step.stage, step.phase), job_labels=job_labels,
                 completions=step.shards if step.sharded else None)


def _wait_env(target: Target) -> dict[str, str]:
    seconds = target.wait_for_inputs_seconds
    return {m.WAIT_FOR_INPUTS_ENV: str(seconds)} if seconds else {}


# ---------------------------------------------------------------------------------------------
# Training: DDP over the pods of an Indexed Job, or a Kubeflow PyTorchJob or TrainJob (kubeflow.py)


def render_training(target: Target) -> list[dict[str, Any]]:
    config = target.config
    cluster = config.cluster
    (step,) = plan(config, config_uri=CONFIG_FILE, run_uri=target.run_uri, stage="train", force=target.force)
    name = job_name(target, "train", step.phase)
    job_labels = m.labels(run=target.run, stage="train", phase=step.phase, config_hash=config.stage_hash("train"))
    if cluster.training.launcher == "pytorchjob":
        return [kubeflow.pytorch_job(target, step, name, job_labels, _wait_env(target))]
    if cluster.training.launcher == "trainjob":
        return [kubeflow.train_job(target, step, name, job_labels, _wait_env(target))]
    nodes, gpus = cluster.training.nodes, cluster.resources.train.gpus
    service = m.object_name("uvx-rdzv", target.run[:14], unique=name)
    command, args, field_env = _train_command(step, nodes, gpus, f"{name}-0.{service}", cluster.training.rendezvous_port)
    spec = m.PodSpec(command=command, args=args, resources=cluster.resources.train, config_map=target.config_map_name,
                     metrics_port=config.metrics.port, env=_wait_env(target), field_env=field_env,
                     subdomain=service if nodes > 1 else None)
    training_job = m.job(cluster, target.image, spec, name=name, job_labels=job_labels,
                         completions=nodes if nodes > 1 else None, per_index_retries=False)
    if nodes == 1:
        return [training_job]
    rendezvous = m.headless_service(cluster, name=service, job_name=name, port=cluster.training.rendezvous_port,
                                    service_labels=job_labels)
    return [rendezvous, training_job]


def _train_command(step: Step, nodes: int, gpus: int, master: str, port: int):
    """`unitvox train ...` for one process; `torchrun ... -m unitvox train ...` for several."""
    if nodes * max(gpus, 1) == 1:
        return (m.TINI, "--", step.argv[0]), step.argv[1:], {}
    launcher = [f"--nproc-per-node={max(gpus, 1)}"]
    field_env = {}
    if nodes == 1:
        launcher.append("--standalone")
    else:
        launcher += [f"--nnodes={nodes}", "--node-rank=$(NODE_RANK)", f"--master-addr={master}", f"--master-port={port}"]
        field_env["NODE_RANK"] = f"metadata.annotations['{m.INDEX_ANNOTATION}']"
    return (m.TINI, "--", "torchrun"), (*launcher, *kubeflow.torchrun_argv(step)), field_env


# ---------------------------------------------------------------------------------------------
# Ablations and the in-cluster controller


def render_ablation(target: Target) -> list[dict[str, Any]]:
    """An ablation suite as one Indexed Job: index i trains variant i (in the suite's order)."""
    suite = target.suite
    if suite is None:
        raise ValueError("render_ablation needs a Target with a suite")
    cluster = target.config.cluster
    args = ("ablate", "--config", CONFIG_FILE, "--suite", SUITE_FILE, "--run", target.run_uri,
            "--shard-count", str(len(suite.variants)))
    spec = m.PodSpec(command=(m.TINI, "--", "unitvox"), args=args + (("--force",) if target.force else ()),
                     resources=cluster.resources.ablate, config_map=target.config_map_name,
                     metrics_port=target.config.metrics.port, env=_wait_env(target))
    job_labels = m.labels(run=target.run, stage="ablate", variant=suite.name[:40],
                          config_hash=m.short_hash(target.config_text, suite.text, length=12))
    name = m.object_name("uvx-ablate", suite.name[:12], target.run[:14], unique=target.run_uri + suite.text)
    return [render_config_map(target),
            m.job(cluster, target.image, spec, name=name, job_labels=job_labels, completions=len(suite.variants))]


def render_diagnoses(target: Target, kinds: list[str]) -> list[dict[str, Any]]:
    """The config map and a Job per diagnosis (`data`, `checkpoint`, `embeddings`, `training` or `all`).

    A diagnosis reads the run and rewrites RUN/diagnose/<kind>/; its Job is named by the run, the
    kind and the config, and the controller replaces a finished one, since a diagnosis is never up to date.
    """
    from unitvox.diagnostics.commands import DIAGNOSES

    cluster = target.config.cluster
    jobs = []
    for kind in kinds:
        if kind not in (*DIAGNOSES, "all"):
            raise ValueError(f"--diagnose {kind!r}: known diagnoses are {[*DIAGNOSES, 'all']}")
        spec = m.PodSpec(command=(m.TINI, "--", "unitvox"),
                         args=("diagnose", kind, "--config", CONFIG_FILE, "--run", target.run_uri),
                         resources=cluster.resources.diagnose, config_map=target.config_map_name,
                         metrics_port=target.config.metrics.port, env=_wait_env(target))
        job_labels = m.labels(run=target.run, stage="diagnose", phase=kind,
                              config_hash=m.short_hash(target.config_text, length=12))
        name = m.object_name("uvx-diagnose", kind, target.run[:14], unique=target.run_uri + kind + target.config_text)
        jobs.append(m.job(cluster, target.image, spec, name=name, job_labels=job_labels))
    return [render_config_map(target), *jobs]


def command_resources(cluster: ClusterConfig) -> Resources:
    """A command Job's pod: `cluster.resources.use`, or when unset the samples pod's (the same work)."""
    return cluster.resources.use or cluster.resources.samples


def render_command(target: Target, command: UseCommand) -> list[dict[str, Any]]:
    """The config map and one Job running a unitvox command (export, encode, vocode, resynthesize).

    The pod is a stage's pod (image, service account, S3 secret, settings, queue, policies); its
    Job is named by the run and the command line, and labelled stage `use`, phase the command's name.
    """
    cluster = target.config.cluster
    resources = command_resources(cluster)
    args = command.container_args(resources.gpus)
    spec = m.PodSpec(command=(m.TINI, "--", "unitvox"), args=args, resources=resources,
                     config_map=target.config_map_name)
    job_labels = m.labels(run=target.run, stage="use", phase=command.name,
                          config_hash=m.short_hash(*args, length=12))
    name = m.object_name("uvx-use", command.name, target.run[:14], unique="\n".join((target.run_uri, *args)))
    return [render_config_map(target), m.job(cluster, target.image, spec, name=name, job_labels=job_labels)]


def render_driver(target: Target, submit_args: list[str]) -> list[dict[str, Any]]:
    """A small Job that runs `unitvox k8s submit --wait` inside the cluster, for `--detach`."""
    cluster = target.config.cluster
    args = ("k8s", "submit", "--config", CONFIG_FILE, "--run", target.run_uri, "--image", target.image,
            "--namespace", cluster.namespace, "--wait", *submit_args)
    if target.suite:
        args += ("--suite", SUITE_FILE)
    spec = m.PodSpec(command=(m.TINI, "--", "unitvox"), args=args, resources=cluster.resources.controller,
                     config_map=target.config_map_name, service_account=cluster.controller_service_account,
                     automount_token=True)
    job_labels = m.labels(run=target.run, stage="controller", config_hash=m.short_hash(target.config_text, length=12))
    name = m.object_name("uvx-controller", target.run[:14], unique=target.run_uri + " ".join(args) + target.config_text)
    # Not queued: it holds no GPU, and it is what puts the stages' Jobs into the queue one after another.
    driver = m.job(cluster, target.image, spec, name=name, job_labels=job_labels, queued=False)
    driver["spec"]["backoffLimit"] = 1  # the controller adopts what it already created, so one retry is safe
    return [render_config_map(target), driver]


def to_yaml_stream(objects: list[dict[str, Any]], header: str = "") -> str:
    """Objects as one multi-document YAML stream for `kubectl apply -f`."""
    body = "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)
    return f"{header}{body}"
