"""The stage table: every stage, its phases, and the one way to run a phase of it.

A stage module defines `PHASES`, `inputs(config, store)` (fingerprints of what it reads) and one
function per phase, `<phase>(context)`; the last phase writes the stage's `_SUCCESS.json`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from unitvox import preflight
from unitvox.config import Config, ConfigError, to_yaml
from unitvox.errors import IncompleteError
from unitvox.layout import CONFIG, STAGE_NAMES
from unitvox.prometheus import MetricsSink, NullSink, open_sink, run_label
from unitvox.stages import record
from unitvox.store import Store


@dataclass(frozen=True)
class Phase:
    """A step of a stage; a sharded phase splits its items over `shards` processes or pods."""

    name: str
    sharded: bool = False


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard-index {self.index} is outside 0..{self.count - 1} (--shard-count {self.count})")

    def take(self, items: list) -> list:
        """This shard's share of `items`: every count-th item from index, so shards stay balanced."""
        return items[self.index :: self.count]

    @property
    def name(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"


_Built = TypeVar("_Built")


@dataclass
class Context:
    """What a phase function gets: the config, the run's store, the metrics sink and its shard.

    `shared` outlives the phase: `run_stage` hands the same mapping to every phase and shard it runs
    in this process, so what `reused` builds (a speech encoder) is built once, not once per shard.
    """

    config: Config
    store: Store
    metrics: MetricsSink = field(default_factory=NullSink)
    shard: Shard = field(default_factory=Shard)
    force: bool = False
    started: float = field(default_factory=time.time)
    shared: dict[Hashable, Any] = field(default_factory=dict)

    def reused(self, key: Hashable, build: Callable[[], _Built]) -> _Built:
        """`build()`, or what it returned for the same key earlier in this `run_stage` call."""
        if key not in self.shared:
            self.shared[key] = build()
        return self.shared[key]


@dataclass
class StageResult:
    stage: str
    status: str  # "ran" or "skipped"
    reason: str = ""
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


# Stage name -> its module, imported when the stage runs (each pulls in its own heavy libraries).
STAGES: dict[str, str] = {name: f"unitvox.stages.{name}" for name in STAGE_NAMES}


def stage_module(stage: str) -> ModuleType:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {list(STAGES)}")
    return importlib.import_module(STAGES[stage])


def phases(stage: str) -> tuple[Phase, ...]:
    return stage_module(stage).PHASES


def shard_count(config: Config, stage: str) -> int:
    return getattr(getattr(config, stage), "shards", 1)


def pending(config: Config, store: Store, stage: str) -> str | None:
    """Why `stage` must run, or None when its `_SUCCESS.json` matches and its outputs exist."""
    module = stage_module(stage)
    return record.mismatch(store, stage, config_hash=config.stage_hash(stage), inputs=module.inputs(config, store))


def run_stage(
    config: Config,
    store: Store,
    stage: str,
    *,
    metrics: MetricsSink | None = None,
    phase: str | None = None,
    shard: Shard | None = None,
    force: bool = False,
) -> StageResult:
    """Run a whole stage in this process, or one phase of it (for one shard when the phase is sharded).

    Without `metrics`, each phase and shard reports to the sink `open_sink` picks from
    `config.metrics` (served for training, pushed for short stages), closed when it ends.
    """
    module = stage_module(stage)
    started, retries_reported = time.time(), store.retry_counts()
    # Before anything is read or written: a missing package or bucket refuses the run at once, rather
    # than after a pod has waited for its inputs or a stage has worked for hours.
    preflight.check(config, (stage,), run=store.uri)
    reason = "forced" if force else pending(config, store, stage)
    if reason is None:
        return StageResult(stage, "skipped", "finished earlier with the same config and inputs")
    store.write_text(CONFIG, _resolved_yaml(config))
    all_phases = module.PHASES
    selected = _select_phases(all_phases, phase, stage, shard)
    summary: dict[str, Any] = {}
    shared: dict[Hashable, Any] = {}  # what phases and shards of this call build once (Context.reused)
    for step in selected:
        if step.sharded:
            count = shard_count(config, stage)
            shards = [shard] if shard else [Shard(i, count) for i in range(count)]
        else:
            shards = [Shard()]
        for one in shards:
            sink = metrics if metrics is not None else open_sink(config, run_label(store.uri), stage, shard=one.index)
            context = Context(config, store, sink, one, force, started, shared)
            try:
                summary = _run_phase(module, step, context, last=step == all_phases[-1])
            except IncompleteError as waiting:
                if phase is None and shard is not None:  # the last shard to finish merges
                    return StageResult(stage, "partial", str(waiting), round(time.time() - started, 3))
                raise
            finally:  # retries are reported even when the phase fails, which is when they matter most
                retries_reported = _report_retries(store, sink, retries_reported)
                if metrics is None:  # a sink given by the caller is the caller's to close
                    sink.close()
    return StageResult(stage, "ran", reason, round(time.time() - started, 3), summary)


def _report_retries(store: Store, sink: MetricsSink, reported: dict[str, int]) -> dict[str, int]:
    """Add the store's retries since `reported` to the `store_retries_total` counter; returns the new count."""
    now = store.retry_counts()
    for kind, count in now.items():
        if count > reported.get(kind, 0):
            sink.increment("store_retries_total", count - reported.get(kind, 0), kind=kind)
    return now


def _run_phase(module: ModuleType, step: Phase, context: Context, *, last: bool) -> dict[str, Any]:
    """Run one phase for one shard, then report its duration (and the stage's success after its last phase)."""
    began = time.time()
    summary = getattr(module, step.name)(context) or {}
    shard = str(context.shard.index)
    context.metrics.gauge("stage_duration_seconds", time.time() - began, phase=step.name, shard=shard)
    if last:
        context.metrics.gauge("stage_last_success_timestamp_seconds", time.time())
    return summary


def _select_phases(all_phases: tuple[Phase, ...], phase: str | None, stage: str, shard: Shard | None) -> list[Phase]:
    if phase is None:
        if shard is not None and sum(p.sharded for p in all_phases) > 1:
            names = ", ".join(p.name for p in all_phases)
            raise ConfigError(
                f"{stage} runs in phases ({names}) with a fit between its sharded ones: pass --phase with "
                "--shard-index (unitvox pipeline and the Kubernetes renderer do this)"
            )
        return list(all_phases)
    chosen = [p for p in all_phases if p.name == phase]
    if not chosen:
        raise ConfigError(f"--phase {phase!r}: {stage} has phases {[p.name for p in all_phases]}")
    return chosen


def _resolved_yaml(config: Config) -> str:
    return to_yaml(config, "# The resolved config of this run, written by unitvox; rerun a stage with:\n"
                           "#   unitvox <stage> --config <run>/config.yaml --run <run>\n")
