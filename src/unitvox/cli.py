"""The one command surface: `unitvox <stage> --config FILE --run URI [--set key=value ...]`.

Run: unitvox --help
Exit codes: 0 done, 1 failed, 2 bad config or bad input (a Job should not retry it), 3 quality gates
failed, 4 training stopped on a critical health check, 143 stopped by SIGTERM after saving progress.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from unitvox import __version__, exitcodes, preflight
from unitvox.config import ConfigError, load, to_yaml
from unitvox.errors import IncompleteError, Interrupted, Unhealthy
from unitvox.layout import CONFIG
from unitvox.stages import STAGES, Shard, run_stage, shard_count, stage_module
from unitvox.store import StoreError, open_store

EXIT_FAILED = exitcodes.FAILED
EXIT_CONFIG = exitcodes.CONFIG
EXIT_INTERRUPTED = exitcodes.INTERRUPTED
WAIT_POLL_SECONDS = 30.0

_STAGE_EXAMPLES = {
    "prepare": """examples:
  unitvox prepare --config jobs/base.yaml --run ./runs/exp1 --set prepare.input=/data/raw
  unitvox prepare --config jobs/base.yaml --run s3://bucket/runs/exp1 --set prepare.input=/data/raw   # upload, resumable
  unitvox prepare --config jobs/base.yaml --run ./runs/exp1 --phase segment --shard-index 0 --shard-count 4""",
    "tokenize": """examples:
  unitvox tokenize --config jobs/base.yaml --run ./runs/exp1
  unitvox tokenize --config jobs/base.yaml --run ./runs/exp1 --set tokenize.features.extractor=mfcc
  unitvox tokenize --config jobs/base.yaml --run ./runs/exp1 --phase assign --shard-index 1 --shard-count 4""",
    "train": """examples:
  unitvox train --config jobs/base.yaml --run ./runs/exp1
  torchrun --nproc-per-node 2 -m unitvox train --config jobs/base.yaml --run-root ./runs/exp1   # DDP
  unitvox train --config jobs/demo.yaml --run ./runs/demo --set train.max_steps=50""",
    "evaluate": """examples:
  unitvox evaluate --config jobs/base.yaml --run ./runs/exp1          # exit 3 when a gate fails
  unitvox evaluate --config jobs/base.yaml --run ./runs/exp1 --set evaluate.checkpoint=latest --set evaluate.gates.snr_db_min=0""",
    "samples": """examples:
  unitvox samples --config jobs/base.yaml --run ./runs/exp1
  unitvox samples --config jobs/base.yaml --run ./runs/exp1 --set samples.count=10""",
    "bpe": """examples:
  unitvox bpe --config jobs/base.yaml --run ./runs/exp1
  unitvox bpe --config jobs/base.yaml --run ./runs/exp1 --set bpe.vocab_size=500""",
}


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config: a path, file:// or s3:// URI")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. tokenize.kmeans.k=50 (repeatable)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    # --run-root is the same flag for torchrun, whose own parser takes --run for its --run-path.
    parser.add_argument("--run", "--run-root", dest="run", required=True,
                        help="run root: ./runs/NAME, file:///abs/path or s3://bucket/prefix")
    parser.add_argument("--force", action="store_true", help="rerun even when _SUCCESS.json matches")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unitvox",
        description="Acoustic units, motifs and unit vocoders for speech research, as batch jobs.",
        epilog="examples:\n  unitvox validate --config jobs/base.yaml\n"
               "  unitvox pipeline --config jobs/demo.yaml --run ./runs/demo\n"
               "  unitvox prepare --config jobs/base.yaml --run ./runs/exp1 --set prepare.input=/data/raw",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"unitvox {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help_text, examples, add_arguments) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=examples,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


# ---------------------------------------------------------------------------------------------
# Commands


def _stage_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--phase", help="run one phase only (what the pipeline and Kubernetes Jobs do)")
    parser.add_argument("--shard-index", type=int, help="this shard, 0-based (default: $JOB_COMPLETION_INDEX)")
    parser.add_argument("--shard-count", type=int, help="number of shards (default: <stage>.shards)")


def _make_stage_command(stage: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        config = load(args.config, args.overrides)
        index = args.shard_index
        if index is None and args.shard_count is not None or index is None and args.phase:
            index = _job_completion_index()
        shard = None
        if index is not None:
            shard = Shard(index, args.shard_count or shard_count(config, stage))
        store = open_store(args.run)
        result = _wait_for_inputs(lambda: run_stage(config, store, stage, phase=args.phase, shard=shard, force=args.force))
        where = f" phase {args.phase}" if args.phase else ""
        where += f" shard {shard.index}/{shard.count}" if shard else ""
        print(f"{stage}{where}: {result.status} ({result.reason}) in {result.seconds:.1f} s")
        for name, value in result.summary.items():
            print(f"  {name}: {value}")
        final_phase = args.phase in (None, stage_module(stage).PHASES[-1].name)
        gate = getattr(stage_module(stage), "exit_code", None)
        return gate(config, store) if gate and final_phase and result.status != "partial" else 0

    return command


def _wait_for_inputs(run: Callable[[], Any]) -> Any:
    """Run, retrying while the inputs are not there yet, for up to $UNITVOX_WAIT_FOR_INPUTS_SECONDS.

    `kubectl apply` of a whole rendered pipeline starts every Job at once; this lets a later
    stage's pods wait for the earlier stage instead of failing. Locally the default is no wait.
    """
    budget = _environment_seconds(exitcodes.WAIT_FOR_INPUTS_ENV)
    deadline = time.monotonic() + budget
    while True:
        try:
            return run()
        except IncompleteError as waiting:
            if time.monotonic() >= deadline:
                raise
            print(f"waiting for inputs ({waiting}); checking again in {WAIT_POLL_SECONDS} s", file=sys.stderr)
            time.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _environment_seconds(name: str) -> float:
    value = os.environ.get(name, "0") or "0"
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}") from None


def _job_completion_index() -> int | None:
    value = os.environ.get("JOB_COMPLETION_INDEX")
    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"JOB_COMPLETION_INDEX: expected a non-negative integer, got {value!r}")
    return int(value)


def _validate(args: argparse.Namespace) -> int:
    config = load(args.config, args.overrides)
    preflight.check(config, run=args.run)  # the packages, model folders and bucket it needs
    print(f"{args.config}: valid" + (f" for {args.run}" if args.run else ""))
    for section in STAGES:
        print(f"  {section}: config hash {config.stage_hash(section)[:12]}")
    return 0


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument("--run", "--run-root", dest="run",
                        help="also check the run root: an s3:// one must answer and its bucket exist")


def _pipeline(args: argparse.Namespace) -> int:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.controller.local import StepFailed, run_pipeline, summary_lines

    config = load(args.config, args.overrides)
    stages = args.stages.split(",") if args.stages else None
    preflight.check(config, stages or config.pipeline.stages, run=args.run)  # refuse before the first stage
    store = open_store(args.run)
    store.write_text(CONFIG, to_yaml(config, "# The resolved config of this run, written by unitvox pipeline\n"))
    try:
        reports = run_pipeline(config, store, config_uri=store.url(CONFIG), stages=stages, force=args.force)
    except StepFailed as failure:
        print(f"pipeline stopped: {failure}", file=sys.stderr)
        return failure.code if failure.code in exitcodes.PERMANENT else EXIT_FAILED
    print("\n".join(summary_lines(reports, store.uri)))
    return 0


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--stages", help="comma-separated subset, e.g. tokenize,bpe (default: pipeline.stages)")


def _ablate(args: argparse.Namespace) -> int:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.ablations.plan import plan_ablation
    from unitvox.ablations.run import compare_only, run_suite, run_variant
    from unitvox.ablations.suite import load_suite
    from unitvox.controller.local import StepFailed

    plan = plan_ablation(load(args.config, args.overrides), load_suite(args.suite), args.only)
    if args.validate:
        print(f"{args.suite}: valid against {args.config}; variants to run:\n" + "\n".join(plan.describe()))
        return 0
    if not args.compare_only:  # the bucket, and every variant's packages and models, before the first stage
        stages = [*plan.upstream, *plan.variant_stages()]
        preflight.check_store(plan.base, stages, run=args.run)
        for name in plan.selected:
            preflight.check_installed(plan.configs[name], stages)
    store = open_store(args.run)
    if args.compare_only:
        print("\n".join(compare_only(plan, store).lines()))
        return 0
    if args.shard_index is not None or args.shard_count is not None:  # one variant: what a pod runs
        index = args.shard_index if args.shard_index is not None else _job_completion_index()
        if index is None:
            raise ConfigError("--shard-count: pass --shard-index or set JOB_COMPLETION_INDEX to pick the variant")
        outcome = _wait_for_inputs(lambda: run_variant(plan, store, index, args.shard_count, force=args.force))
        print("\n".join(outcome.lines()))
        return 0
    try:
        outcome = run_suite(plan, store, force=args.force)
    except StepFailed as failure:
        print(f"ablation stopped before its variants: {failure}", file=sys.stderr)
        return failure.code if failure.code in exitcodes.PERMANENT else EXIT_FAILED
    print("\n".join(outcome.lines()))
    if outcome.failed:
        print(f"unitvox: a variant failed: {outcome.failed}", file=sys.stderr)
    return outcome.exit_code


def _ablate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--suite", required=True, help="ablation suite YAML: named variants of the base config")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="run (and compare) only these variants")
    parser.add_argument("--compare-only", action="store_true",
                        help="train nothing: compare what exists (unfinished variants are listed as missing)")
    parser.add_argument("--validate", action="store_true", help="check the suite against the config and stop")
    parser.add_argument("--shard-index", type=int, help="run only this variant, 0-based (default: $JOB_COMPLETION_INDEX)")
    parser.add_argument("--shard-count", type=int,
                        help="number of variants; with it, one variant runs (what each Kubernetes pod does)")


_ABLATE_EXAMPLES = """examples:
  unitvox ablate --config jobs/demo.yaml --suite jobs/ablations/speaker.yaml --run ./runs/ablate-speaker
  unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --only baseline no_gan
  unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --compare-only
  unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --validate
  JOB_COMPLETION_INDEX=2 unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --shard-count 11

Variants share RUN's prepare/tokenize/bpe (run once with the base config) and train under
RUN/ablations/<variant>/; the comparison is RUN/ablations/report.md and comparison.json."""


def _diagnose(args: argparse.Namespace) -> int:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.diagnostics import commands

    return commands.run(args)


def _diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.diagnostics import commands

    def run_arguments(sub: argparse.ArgumentParser) -> None:
        _add_config_arguments(sub)
        sub.add_argument("--run", "--run-root", dest="run", required=True,
                         help="run root to diagnose: ./runs/NAME, file:///abs/path or s3://bucket/prefix")

    commands.add_arguments(parser, run_arguments)


def _diagnose_examples() -> str:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.diagnostics.commands import EXAMPLES

    return EXAMPLES


def _demo_corpus(args: argparse.Namespace) -> int:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.demo import synthesise_corpus

    paths = synthesise_corpus(args.out, speakers=args.speakers, utterances_per_speaker=args.utterances)
    print(f"{len(paths)} recordings under {args.out}")
    return 0


def _demo_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo-corpus", help="folder to write <speaker>/<id>.wav into")
    parser.add_argument("--speakers", type=int, default=6)
    parser.add_argument("--utterances", type=int, default=8, help="utterances per speaker")


def _use_commands() -> dict[str, tuple]:
    """export, encode, vocode and resynthesize (unitvox.use.commands); torch loads only when one runs."""
    from unitvox.use import commands

    return {name: (functools.partial(commands.run, name), help_text, commands.EXAMPLES[name],
                   functools.partial(commands.add_arguments, name)) for name, help_text in commands.HELP.items()}


def _k8s(args: argparse.Namespace) -> int:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.controller import commands

    return commands.run(args)


def _k8s_arguments(parser: argparse.ArgumentParser) -> None:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.controller import commands

    commands.add_arguments(parser)


def _k8s_examples() -> str:
    # lazy: keeps torch, sklearn, matplotlib and kubernetes off the path of `unitvox --help`
    from unitvox.controller.commands import EXAMPLES

    return EXAMPLES


COMMANDS = {
    "validate": (_validate, "check a config without running anything",
                 "examples:\n  unitvox validate --config jobs/base.yaml --set tokenize.kmeans.k=50\n"
                 "  unitvox validate --config jobs/base.yaml --run s3://bucket/runs/exp1   # and the bucket",
                 _validate_arguments),
    **{
        stage: (_make_stage_command(stage), f"run the {stage} stage", _STAGE_EXAMPLES[stage], _stage_arguments)
        for stage in STAGES
    },
    "pipeline": (_pipeline, "run every stage in order, skipping finished ones",
                 "examples:\n  unitvox pipeline --config jobs/demo.yaml --run ./runs/demo\n"
                 "  unitvox pipeline --config jobs/base.yaml --run s3://bucket/runs/exp1 --set prepare.input=s3://bucket/raw",
                 _pipeline_arguments),
    "ablate": (_ablate, "train an ablation suite's variants side by side and compare them", _ABLATE_EXAMPLES,
               _ablate_arguments),
    "diagnose": (_diagnose, "diagnose a run: its data, a checkpoint, speaker embeddings or training health",
                 _diagnose_examples(), _diagnose_arguments),
    **_use_commands(),
    "k8s": (_k8s, "render, submit, follow and cancel a run's Jobs on Kubernetes", _k8s_examples(), _k8s_arguments),
    "demo-corpus": (_demo_corpus, "synthesise the small multi-speaker demo corpus (espeak-ng)",
                    "examples:\n  unitvox demo-corpus --out runs/demo-corpus", _demo_corpus_arguments),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except tuple(kind for kind, _, _ in _FAILURES) as error:
        label, code = next((label, code) for kind, label, code in _FAILURES if isinstance(error, kind))
        print(f"unitvox: {label}: {error}", file=sys.stderr)
        return code


# What a known failure prints and exits with; a traceback is left for the unexpected.
_FAILURES = (
    (ConfigError, "config error", EXIT_CONFIG),
    (StoreError, "store error", EXIT_FAILED),
    (Interrupted, "interrupted", EXIT_INTERRUPTED),
    (Unhealthy, "training unhealthy", exitcodes.UNHEALTHY),
    (IncompleteError, "not ready", EXIT_FAILED),
)


__all__ = ["COMMANDS", "build_parser", "main"]
