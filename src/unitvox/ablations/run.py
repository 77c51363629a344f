"""Train an ablation suite's variants side by side, each in its own area of the run, sharing the base's data.

Run: unitvox ablate --config jobs/demo.yaml --suite jobs/ablations/speaker.yaml --run ./runs/ablate-speaker
     unitvox ablate ... --shard-count 11   (one variant, chosen by $JOB_COMPLETION_INDEX: a Kubernetes pod)

Layout under the run root:
    prepare/ tokenize/ bpe/          made once from the base config, read by every variant
    ablations/config.yaml            the resolved base config the variants are made from
    ablations/suite.yaml             the suite, as given
    ablations/<variant>/config.yaml  the variant's resolved config
    ablations/<variant>/train/       its training log, checkpoints and samples
    ablations/<variant>/evaluate/    its metrics.json and reports
    ablations/comparison.json, report.md, curves.png
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from unitvox import exitcodes
from unitvox.ablations.ablation_report import REPORT, write_comparison
from unitvox.ablations.plan import Plan
from unitvox.config import Config, ConfigError, to_yaml
from unitvox.controller.local import Step, StepFailed, run_pipeline, run_step
from unitvox.errors import IncompleteError
from unitvox.layout import (
    ABLATION_CONFIG as BASE_CONFIG, ABLATION_SUITE as SUITE_COPY, ABLATIONS, CONFIG, ablation_variant, success,
)
from unitvox.prometheus import open_sink, run_label
from unitvox.stages import Shard, StageResult, pending, run_stage
from unitvox.store import Store
from unitvox.store.overlay import OverlayStore


def variant_store(root: Store, name: str, upstream: list[str]) -> Store:
    """The variant's own area under the run root, reading the shared upstream folders from the root."""
    return OverlayStore(root.child(ablation_variant(name)), root, tuple(upstream))


def variant_finished(plan: Plan, root: Store, name: str) -> bool:
    """Whether every stage of the variant has a `_SUCCESS.json` made from its current config."""
    own = root.child(ablation_variant(name))
    for stage in plan.variant_stages():
        key = success(stage)
        if not own.exists(key) or own.read_json(key).get("config_hash") != plan.configs[name].stage_hash(stage):
            return False
    return True


def require_upstream(plan: Plan, root: Store) -> None:
    """Refuse to train a variant before the shared stages are finished with the base config.

    Raises:
        IncompleteError: naming the stage and the command that runs it.
    """
    for stage in plan.upstream:
        reason = "not run yet" if not root.exists(success(stage)) else pending(plan.base, root, stage)
        if reason is not None:
            raise IncompleteError(
                f"the variants share the base run's {stage} ({root.url(stage)}/), which is not finished ({reason}): "
                f"run it first, e.g. unitvox pipeline --config BASE --run {root.uri} "
                f"--stages {','.join(plan.upstream)}")


def record_inputs(plan: Plan, root: Store) -> None:
    """Keep the base config and the suite under `ablations/`: what the variants and the comparison came from."""
    root.write_text(BASE_CONFIG, to_yaml(plan.base, "# The resolved base config of this ablation, written by "
                                                    "unitvox ablate; every variant changes a few keys of it\n"))
    root.write_text(SUITE_COPY, plan.suite.text)


def _write_variant_config(plan: Plan, root: Store, name: str) -> None:
    rerun = (f"unitvox ablate --config {root.url(BASE_CONFIG)} --suite {root.url(SUITE_COPY)} --run {root.uri} "
             f"--only {name}")
    header = f"# Variant {name} of ablation suite {plan.suite.name}, written by unitvox ablate. Rerun:\n#   {rerun}\n"
    root.write_text(f"{ablation_variant(name)}/{CONFIG}", to_yaml(plan.configs[name], header))


# ---------------------------------------------------------------------------------------------
# One variant: what a pod of the ablation's Indexed Job (or a local worker) does


@dataclass
class VariantOutcome:
    name: str
    results: list[StageResult]
    compared: bool = False

    def lines(self) -> list[str]:
        done = [f"{result.stage} {result.status} in {result.seconds:.1f} s" for result in self.results]
        return [f"variant {self.name}: " + ", ".join(done)] + (
            [f"every variant finished: comparison written under {ABLATIONS}/"] if self.compared else [])


def run_variant(plan: Plan, root: Store, index: int, count: int | None = None, *,
                force: bool = False) -> VariantOutcome:
    """Train (and evaluate) variant `index` of the selected variants, in the suite's order.

    The last variant to finish also writes the comparison, so an Indexed Job leaves one behind.

    Raises:
        ConfigError: `count` is not the number of selected variants, or `index` is outside it.
        IncompleteError: the shared upstream stages are not finished.
    """
    count = len(plan.selected) if count is None else count
    if count != len(plan.selected):
        raise ConfigError(f"--shard-count {count}: {plan.suite.uri} has {len(plan.selected)} variants to run "
                          f"({', '.join(plan.selected)}), one shard each")
    Shard(index, count)  # refuses an index outside 0..count-1
    require_upstream(plan, root)
    name = plan.selected[index]
    config = plan.configs[name]
    store = variant_store(root, name, plan.upstream)
    record_inputs(plan, root)
    _write_variant_config(plan, root, name)
    results = []
    try:
        for stage in plan.variant_stages():
            sink = open_sink(config, run_label(root.uri), stage)  # the run's label, not the variant folder's
            try:
                fresh = force or _restart(config, store, stage)
                results.append(run_stage(config, store, stage, metrics=sink, force=fresh))
            finally:
                sink.close()
    finally:
        _write_variant_config(plan, root, name)  # a stage writes its own config.yaml, with a generic header
    outcome = VariantOutcome(name, results)
    if all(variant_finished(plan, root, other) for other in plan.suite.names()):
        write_comparison(plan, root)
        outcome.compared = True
    return outcome


def _restart(config: Config, store: Store, stage: str) -> bool:
    """Whether a variant's training must start over rather than resume: its config changed since it ran.

    Resuming would load the old run's final checkpoint, stop at once (max_steps is reached) and
    report the old variant's results as the new one's.
    """
    if stage != "train" or not store.exists(success("train")):
        return False
    return pending(config, store, stage) == "config changed"


# ---------------------------------------------------------------------------------------------
# The whole suite on this machine


@dataclass
class SuiteOutcome:
    """The comparison's findings and where it is; `failed` names the first variant command that failed."""

    findings: list[str]
    report: str
    failed: str | None = None
    exit_code: int = 0

    def lines(self) -> list[str]:
        return [*self.findings, f"report: {self.report}"]


def run_suite(plan: Plan, root: Store, *, force: bool = False, echo: Callable[[str], None] = print) -> SuiteOutcome:
    """Run the shared stages once, then every selected variant in parallel subprocesses, then compare.

    Each subprocess runs exactly what a pod of the Kubernetes Indexed Job runs, with its index in
    JOB_COMPLETION_INDEX, and skips the stages it finished before. A failed variant is reported
    in the outcome after the comparison of the others is written.

    Raises:
        StepFailed: a shared stage failed, so no variant could run.
    """

    record_inputs(plan, root)
    run_pipeline(plan.base, root, config_uri=root.url(BASE_CONFIG), stages=plan.upstream, echo=echo)
    argv = ("unitvox", "ablate", "--config", root.url(BASE_CONFIG), "--suite", root.url(SUITE_COPY), "--run", root.uri)
    if plan.selected != tuple(plan.suite.names()):
        argv += ("--only", *plan.selected)
    argv += ("--shard-count", str(len(plan.selected))) + (("--force",) if force else ())
    workers = plan.base.pipeline.workers or os.cpu_count() or 1
    echo(f"[ablate] {len(plan.selected)} variants, up to {min(workers, len(plan.selected))} at a time: "
         + ", ".join(plan.selected))
    failed, exit_code = None, exitcodes.DONE
    try:
        run_step(Step("ablate", "variants", argv, sharded=True, shards=len(plan.selected)), workers)
    except StepFailed as failure:
        failed = str(failure)
        exit_code = failure.code if failure.code in exitcodes.PERMANENT else exitcodes.FAILED
    outcome = compare_only(plan, root)
    outcome.failed, outcome.exit_code = failed, exit_code
    return outcome


def compare_only(plan: Plan, root: Store) -> SuiteOutcome:
    """The comparison of whatever variants have finished; the rest are listed as missing."""
    return SuiteOutcome(write_comparison(plan, root).findings, root.url(REPORT))
