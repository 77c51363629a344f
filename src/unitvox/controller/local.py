"""The local runner: every stage's phases as subprocesses, with the argv a Kubernetes Job runs.

Run: unitvox pipeline --config jobs/demo.yaml --run ./runs/demo
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from unitvox.config import Config
from unitvox.stages import STAGES, pending, phases, shard_count
from unitvox.store import Store


@dataclass(frozen=True)
class Step:
    """One phase of a stage: the argv every shard runs; a shard learns its index from JOB_COMPLETION_INDEX."""

    stage: str
    phase: str
    argv: tuple[str, ...]
    sharded: bool = False
    shards: int = 1


def plan(config: Config, *, config_uri: str, run_uri: str, stage: str, force: bool = False) -> list[Step]:
    """The steps of one stage: `unitvox <stage> ...` argvs, identical for subprocesses and Kubernetes Jobs."""
    steps = []
    for phase in phases(stage):
        argv = ("unitvox", stage, "--config", config_uri, "--run", run_uri, "--phase", phase.name)
        argv += ("--force",) if force else ()
        if phase.sharded:
            count = shard_count(config, stage)
            steps.append(Step(stage, phase.name, (*argv, "--shard-count", str(count)), True, count))
        else:
            steps.append(Step(stage, phase.name, argv))
    return steps


@dataclass
class StageReport:
    stage: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)


class StepFailed(RuntimeError):
    def __init__(self, argv: tuple[str, ...], code: int):
        super().__init__(f"{' '.join(argv)} exited with code {code}")
        self.argv, self.code = argv, code


def run_pipeline(
    config: Config, store: Store, *, config_uri: str, stages: list[str] | None = None, force: bool = False,
    echo=print,
) -> list[StageReport]:
    """Run stages in order, skipping those already finished; shards run in parallel up to `pipeline.workers`."""
    workers = config.pipeline.workers or os.cpu_count() or 1
    reports = []
    for stage in stages or config.pipeline.stages:
        reason = "forced" if force else pending(config, store, stage)
        if reason is None:
            echo(f"[{stage}] skipped: finished earlier with the same config and inputs")
            reports.append(StageReport(stage, "skipped", "up to date"))
            continue
        echo(f"[{stage}] running ({reason})")
        started = time.time()
        commands = []
        for step in plan(config, config_uri=config_uri, run_uri=store.uri, stage=stage, force=force):
            commands.append(" ".join(step.argv) + (f"  (x{step.shards} shards)" if step.sharded else ""))
            run_step(step, workers)
        reports.append(StageReport(stage, "ran", reason, round(time.time() - started, 2), commands))
    return reports


def run_step(step: Step, workers: int) -> None:
    """Run a step's shards as subprocesses, up to `workers` at a time, each with its share of the cores.

    Raises:
        StepFailed: for the first shard that exited non-zero, once every shard has ended.
    """
    parallel = min(workers, step.shards)
    environment = {name: value for name, value in os.environ.items() if name != "JOB_COMPLETION_INDEX"}
    # Shards share the machine's cores; without this each would start a thread per core.
    if parallel > 1:
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        environment.update({name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})

    def launch(index: int) -> int:
        shard_environment = {**environment, "JOB_COMPLETION_INDEX": str(index)} if step.sharded else environment
        return subprocess.run([sys.executable, "-m", *step.argv], env=shard_environment).returncode

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        codes = list(pool.map(launch, range(step.shards)))
    for index, code in enumerate(codes):
        if code != 0:
            raise StepFailed(step.argv + ((f"(shard {index})",) if step.sharded else ()), code)


def summary_lines(reports: list[StageReport], run_uri: str) -> list[str]:
    lines = [f"{'stage':<10} {'status':<8} {'seconds':>8}  reason"]
    for report in reports:
        lines.append(f"{report.stage:<10} {report.status:<8} {report.seconds:>8.1f}  {report.reason}")
    lines.append(f"outputs under {run_uri}: " + ", ".join(f"{r.stage}/" for r in reports))
    return lines


__all__ = ["STAGES", "Step", "StepFailed", "plan", "run_pipeline", "run_step", "summary_lines"]
