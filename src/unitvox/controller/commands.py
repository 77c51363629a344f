"""`unitvox k8s render | submit | status | logs | cancel`: the cluster commands, parsed and delegated.

Run: unitvox k8s --help
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from unitvox import exitcodes

EXAMPLES = """examples:
  unitvox k8s render --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG > pipeline.yaml
  unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG --wait
  unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image REGISTRY/unitvox:TAG --detach
  unitvox k8s submit ... --stage evaluate --set evaluate.checkpoint=s3://bucket/ckpt.pt --results-dir results  # exit 3: gates
  unitvox k8s submit --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run s3://bucket/runs/abl1 --image IMG
  unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image IMG --diagnose training,data
  unitvox k8s submit ... --resynthesize --input s3://bucket/mine/ --out s3://bucket/resynth/ --speaker s3://bucket/ref.wav
  unitvox k8s submit ... --command "encode s3://bucket/raw/ --out s3://bucket/units/raw.jsonl --deduplicate"
  unitvox k8s status --run s3://bucket/runs/exp1
  unitvox k8s logs   --run s3://bucket/runs/exp1 --stage train --follow
  unitvox k8s cancel --run s3://bucket/runs/exp1"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (handler, help_text, options) in ACTIONS.items():
        sub = actions.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        options(sub)
        sub.set_defaults(action_handler=handler)


def run(args: argparse.Namespace) -> int:
    return args.action_handler(args)


# ---------------------------------------------------------------------------------------------
# Arguments


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", help="default: cluster.namespace of the config, else unitvox")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config; in a pod, its service account")
    parser.add_argument("--context", help="a kubeconfig context other than the current one")
    parser.add_argument("--api-server", help=argparse.SUPPRESS)  # a bare API URL: a kubectl proxy or a test server


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config: a path, file:// or s3:// URI")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key (repeatable)")
    parser.add_argument("--run", "--run-root", dest="run", required=True, help="run root: s3://bucket/prefix")
    parser.add_argument("--image", help="the unitvox image, REGISTRY/unitvox:TAG (default: cluster.image)")
    parser.add_argument("--stage", dest="stages", action="append", default=[],
                        help="stages to run, comma-separated or repeated (default: pipeline.stages)")
    parser.add_argument("--suite", help="an ablation suite: its variants as one Indexed Job")
    parser.add_argument("--only", nargs="+", help="with --suite: these variants only")
    parser.add_argument("--force", action="store_true", help="rerun stages even when _SUCCESS.json matches")
    parser.add_argument("--diagnose", action="append", default=[], metavar="DIAGNOSIS",
                        help="instead of stages, run diagnoses as Jobs: data, checkpoint, embeddings, training or "
                             "all (comma-separated or repeated)")
    use = parser.add_argument_group("a unitvox command as a Job, instead of stages (inputs and outputs s3:// URIs)")
    use.add_argument("--command", dest="use_command", metavar="'COMMAND ARGS'",
                     help="export, encode, vocode or resynthesize with its arguments, quoted as one argument; "
                          "without --model (export: --run) it uses the run's model")
    use.add_argument("--resynthesize", action="store_true", help="resynthesize --input recordings into --out")
    use.add_argument("--input", dest="use_inputs", action="append", default=[], metavar="URI",
                     help="with --resynthesize: recordings, a folder or a list file (repeatable)")
    use.add_argument("--out", dest="use_out", metavar="URI", help="with --resynthesize: the prefix for the wavs")
    use.add_argument("--model", dest="use_model", metavar="URI",
                     help="with --resynthesize: a bundle or a run root (default: --run)")
    use.add_argument("--speaker", dest="use_speaker", metavar="URI",
                     help="with --resynthesize: a recording of the voice to speak in (conditioned models)")


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    _target(parser)
    parser.add_argument("--detach", action="store_true", help="render the in-cluster controller Job instead "
                        "(the default for a pipeline when cluster.queue is set)")
    parser.add_argument("--all-jobs", action="store_true",
                        help="with cluster.queue: every Job of the pipeline (suspended, queued) instead of the controller")


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    _target(parser)
    _connection(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="follow every Job from here until the run ends (default)")
    mode.add_argument("--detach", action="store_true",
                      help="submit a small controller Job that runs the pipeline inside the cluster, and return")
    parser.add_argument("--results-dir", help="copy evaluate's junit.xml, summary.md and metrics.json here (for CI)")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", "--run-root", dest="run", required=True, help="run root: s3://bucket/prefix")
    parser.add_argument("--config", help="to read cluster.namespace from")
    _connection(parser)


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--stage", required=True, help="prepare, tokenize, ..., ablate, or controller")
    parser.add_argument("--phase", help="one phase of the stage, e.g. assign")
    parser.add_argument("--follow", "-f", action="store_true", help="stream the log of the stage's first pod")
    parser.add_argument("--tail", type=int, default=100, help="lines per pod (default 100)")


# ---------------------------------------------------------------------------------------------
# Actions


def _load_target(args: argparse.Namespace, *, wait_for_inputs: bool):
    from unitvox.ablations.suite import check_suite, load_suite
    from unitvox.config import load
    from unitvox.controller.target import Target

    config = load(args.config, args.overrides)
    suite = load_suite(args.suite).select(args.only) if args.suite else None
    if suite:
        check_suite(config, suite)
    try:
        return Target(config, args.run, args.image or config.cluster.image, suite=suite, force=args.force,
                      wait_for_inputs_seconds=config.cluster.wait_for_inputs_seconds if wait_for_inputs else 0)
    except ValueError as error:
        raise _usage(error) from None


def _stages(args: argparse.Namespace, config: Any) -> list[str]:
    from unitvox.config import ConfigError
    from unitvox.stages import STAGES

    stages = [s for value in args.stages for s in value.split(",") if s] or list(config.pipeline.stages)
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"--stage {stage!r}: known stages are {list(STAGES)}")
    return stages


def _upstream_of_ablation(config: Any) -> list[str]:
    from unitvox.ablations.plan import upstream_stages

    return upstream_stages(config)


def _render(args: argparse.Namespace) -> int:
    from unitvox.controller.render import (
        render_ablation, render_diagnoses, render_driver, render_pipeline, to_yaml_stream,
    )

    target = _load_target(args, wait_for_inputs=True)
    command = _use_command(args, target)
    if command is not None:
        from unitvox.controller.render import render_command

        objects = render_command(target, command)
        sys.stdout.write(to_yaml_stream(objects, header=f"# Rendered by: unitvox k8s render --config {args.config} "
                                                        f"--run {args.run} (unitvox {command.name})\n"
                                                        "# Apply with: kubectl apply -f FILE\n"))
        return exitcodes.DONE
    # Kueue admits Jobs as quota allows, not as inputs appear: applied all at once, a later stage could be
    # admitted first and hold GPUs while it waits. With a queue the controller feeds it stage by stage.
    queued_pipeline = bool(target.config.cluster.queue) and not (args.all_jobs or args.diagnose)
    try:
        if args.detach or queued_pipeline:
            objects = render_driver(target, _passed_options(args))
        elif args.diagnose:
            objects = render_diagnoses(target, _diagnoses(args))
        elif target.suite:
            objects = render_pipeline(target, _upstream_of_ablation(target.config)) + render_ablation(target)[1:]
        else:
            objects = render_pipeline(target, _stages(args, target.config))
    except ValueError as error:
        raise _usage(error) from None
    sys.stdout.write(to_yaml_stream(objects, header=f"# Rendered by: unitvox k8s render --config {args.config} "
                                                    f"--run {args.run}\n# Apply with: kubectl apply -f FILE\n"))
    return exitcodes.DONE


def _submit(args: argparse.Namespace) -> int:
    from unitvox.controller.render import render_driver
    from unitvox.controller.submit import Controller, SubmitFailed, copy_results, ensure
    from unitvox.store import open_store

    target = _load_target(args, wait_for_inputs=False)
    command = _use_command(args, target)
    cluster = _connect(args, target.config)
    if command is not None:
        return _submit_command(args, cluster, target, command)
    if args.detach:
        for obj in render_driver(target, _passed_options(args)):
            ensure(cluster, obj)
        print(f"submitted the controller Job for {args.run}; follow it with:\n"
              f"  unitvox k8s logs --run {args.run} --stage controller --follow\n  unitvox k8s status --run {args.run}")
        return exitcodes.DONE
    store = open_store(args.run)
    controller = Controller(cluster, target, store)
    if args.diagnose:
        return _submit_diagnoses(controller, store, _diagnoses(args))
    stages = _stages(args, target.config)
    code = exitcodes.DONE
    try:
        if target.suite:
            controller.submit_ablation(_upstream_of_ablation(target.config))
        else:
            controller.submit(stages)
    except SubmitFailed as failure:
        print(f"unitvox: {failure}", file=sys.stderr)
        code = failure.code
    if "evaluate" in stages and not target.suite:
        if code == exitcodes.DONE:
            from unitvox.stages.evaluate import exit_code

            code = exit_code(target.config, store)
        if args.results_dir:
            for path in copy_results(store, args.results_dir):
                print(f"copied {path}")
    return code


def _use_command(args: argparse.Namespace, target: Any):
    """The checked command of --command or --resynthesize, or None for stages; refuses what does not mix."""
    from unitvox.config import ConfigError
    from unitvox.controller.use_jobs import parse_command, resynthesize_command

    shortcut = {"--input": args.use_inputs, "--out": args.use_out, "--model": args.use_model,
                "--speaker": args.use_speaker}
    if not args.resynthesize:
        for flag, value in shortcut.items():
            if value:
                raise ConfigError(f"{flag}: only with --resynthesize (or inside --command)")
    if args.use_command is None and not args.resynthesize:
        return None
    if args.use_command is not None and args.resynthesize:
        raise ConfigError("--command and --resynthesize: give one of them (--command 'resynthesize ...' is the long form)")
    flag = "--resynthesize" if args.resynthesize else "--command"
    others = {"--stage": args.stages, "--suite": args.suite, "--only": args.only, "--diagnose": args.diagnose,
              "--force": args.force, "--all-jobs": getattr(args, "all_jobs", False),
              "--results-dir": getattr(args, "results_dir", None)}
    for other, value in others.items():
        if value:
            raise ConfigError(f"{other}: not with {flag}, which runs one command instead of stages")
    if args.resynthesize:
        return resynthesize_command(target.run_uri, inputs=args.use_inputs, out=args.use_out, model=args.use_model,
                                    speaker=args.use_speaker)
    return parse_command(args.use_command, target.run_uri)


def _submit_command(args: argparse.Namespace, cluster: Any, target: Any, command: Any) -> int:
    """Create the command's Job and follow it (with --detach, create it and return)."""
    from unitvox.controller.submit import Controller, SubmitFailed
    from unitvox.store import open_store

    follow = f"unitvox k8s logs --run {args.run} --stage use --phase {command.name} --follow"
    try:
        Controller(cluster, target, open_store(args.run)).submit_command(command, follow=not args.detach)
    except SubmitFailed as failure:
        print(f"unitvox: {failure}", file=sys.stderr)
        return failure.code
    if args.detach:
        print(f"submitted unitvox {command.name} for {args.run}; follow it with:\n  {follow}")
    return exitcodes.DONE


def _diagnoses(args: argparse.Namespace) -> list[str]:
    return [kind for value in args.diagnose for kind in value.split(",") if kind]


def _submit_diagnoses(controller: Any, store: Any, kinds: list[str]) -> int:
    """Run the diagnoses' Jobs, then print each verdict and findings from the reports they wrote."""
    from unitvox.controller.submit import SubmitFailed
    from unitvox.diagnostics.commands import DIAGNOSES

    try:
        controller.submit_diagnoses(kinds)
    except SubmitFailed as failure:
        print(f"unitvox: {failure}", file=sys.stderr)
        return failure.code
    for kind in (list(DIAGNOSES) if "all" in kinds else kinds):
        key = f"diagnose/{kind}/report.json"
        if store.exists(key):
            report = store.read_json(key)
            print(f"{kind}: {report['status'].upper()}: {report['verdict']}")
            print("\n".join(f"  - {finding}" for finding in report["findings"]))
            print(f"report: {store.url(f'diagnose/{kind}/report.md')}")
    return exitcodes.DONE


def _passed_options(args: argparse.Namespace) -> list[str]:
    """What the in-cluster controller must be told again (its config already carries --set values)."""
    options = [f"--stage={stage}" for stage in args.stages]
    options += ["--only", *args.only] if args.only else []
    options += [f"--diagnose={kind}" for kind in args.diagnose]
    return options + (["--force"] if args.force else [])


def _status(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from unitvox.controller.objects import JobStatus
    from unitvox.prometheus import run_label

    cluster = _connect(args, _optional_config(args))
    selector = f"unitvox.dev/run={run_label(args.run)}"
    jobs = cluster.jobs(selector)
    jobs += [JobStatus.from_workload(obj) for kind in ("PyTorchJob", "TrainJob") for obj in cluster.objects(kind, selector)]
    if not jobs:
        print(f"no Jobs for {args.run} in namespace {cluster.namespace}")
    now = datetime.now(timezone.utc)
    # state: queued (suspended until Kueue admits it), admitted, running, complete or failed;
    # waited: from creation to admission, or so far while queued.
    print(f"{'stage':<10} {'phase':<8} {'done':>6} {'running':>8} {'failed':>7}  {'state':<9} {'waited':>7}  job")
    for job in sorted(jobs, key=lambda j: j.created or now):
        labels = job.labels
        waited = job.waited(now)
        print(f"{labels.get('unitvox.dev/stage', '?'):<10} {labels.get('unitvox.dev/phase', ''):<8} "
              f"{job.succeeded:>3}/{job.completions or 1:<2} {job.active:>8} {job.failed:>7}  {job.state:<9} "
              f"{_duration(waited):>7}  {job.name}")
    return exitcodes.FAILED if any(job.finished == "Failed" for job in jobs) else exitcodes.DONE


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _logs(args: argparse.Namespace) -> int:
    from unitvox.prometheus import run_label

    cluster = _connect(args, _optional_config(args))
    selector = f"unitvox.dev/run={run_label(args.run)},unitvox.dev/stage={args.stage}"
    selector += f",unitvox.dev/phase={args.phase}" if args.phase else ""
    pods = sorted(cluster.pods(selector), key=lambda p: (p.created is None, p.created, p.completion_index or 0))
    if not pods:
        print(f"no pods for stage {args.stage} of {args.run}", file=sys.stderr)
        return exitcodes.FAILED
    for pod in pods[-1:] if args.follow else pods:
        print(f"==> {pod.name} ({pod.phase}) <==")
        for line in cluster.logs(pod.name, tail_lines=args.tail, follow=args.follow):
            print(line, flush=args.follow)
    return exitcodes.DONE


def _cancel(args: argparse.Namespace) -> int:
    from unitvox.prometheus import run_label

    cluster = _connect(args, _optional_config(args))
    run = run_label(args.run)
    # The in-cluster controller goes first, so it cannot create the next stage's Jobs meanwhile.
    jobs = sorted(cluster.jobs(f"unitvox.dev/run={run}"), key=lambda j: j.labels.get("unitvox.dev/stage") != "controller")
    # Queued Jobs too: a suspended Job still holds its place in a Kueue queue.
    for job in jobs:
        if cluster.delete("Job", job.name):
            print(f"deleted Job {job.name}" + (" (queued)" if job.suspended else ""))
    for kind in ("PyTorchJob", "TrainJob"):
        for name in cluster.names(kind, f"unitvox.dev/run={run}"):
            if cluster.delete(kind, name):
                print(f"deleted {kind} {name}")
    print(f"cancelled {len(jobs)} Jobs of {args.run}; what they wrote stays in the run, and a resubmission resumes")
    return exitcodes.DONE


def _optional_config(args: argparse.Namespace):
    from unitvox.config import Config, load

    return load(args.config) if args.config else Config()


def _connect(args: argparse.Namespace, config: Any):
    from unitvox.controller.cluster import KubeCluster

    namespace = args.namespace or config.cluster.namespace
    return KubeCluster.connect(namespace, kubeconfig=args.kubeconfig, context=args.context, host=args.api_server)


def _usage(error: Exception) -> Exception:
    from unitvox.config import ConfigError

    return ConfigError(str(error))


ACTIONS = {
    "render": (_render, "print the run's Kubernetes objects as YAML (for kubectl apply)", _render_arguments),
    "submit": (_submit, "create the run's Jobs in order and follow them (or --detach)", _submit_arguments),
    "status": (_status, "the run's Jobs and their state", _run_arguments),
    "logs": (_logs, "a stage's pod logs", _logs_arguments),
    "cancel": (_cancel, "delete the run's Jobs (what they wrote stays)", _run_arguments),
}
