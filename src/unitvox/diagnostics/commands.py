"""`unitvox diagnose data | checkpoint | embeddings | training`: the thin command over each diagnosis.

Run: unitvox diagnose data --config jobs/demo.yaml --run ./runs/demo

Each diagnosis module defines `HELP`, `EXAMPLES`, `add_arguments(parser)` for its own flags and
`from_arguments(config, store, args) -> Diagnosis`, which calls its library function.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from unitvox.config import Config, load
from unitvox.diagnostics.diagnosis import Diagnosis, write_diagnosis
from unitvox.report import markdown_table
from unitvox.errors import IncompleteError
from unitvox.layout import DIAGNOSE_INDEX as INDEX
from unitvox.store import Store, open_store

# Each diagnosis in the order `--help` lists them (and `all` runs them).
DIAGNOSES = {
    "data": "unitvox.diagnostics.data.data_diagnosis",
    "checkpoint": "unitvox.diagnostics.checkpoint.checkpoint_diagnosis",
    "embeddings": "unitvox.diagnostics.embeddings.embeddings_diagnosis",
    "training": "unitvox.diagnostics.training.training_diagnosis",
}

EXAMPLES = """examples:
  unitvox diagnose all        --config jobs/base.yaml --run RUN                  # every diagnosis, and an index
  unitvox diagnose data       --config jobs/base.yaml --run RUN                  # why is validation SNR negative?
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN --checkpoint URI # does it fit the model the config builds?
  unitvox diagnose embeddings --config jobs/base.yaml --run RUN                  # how well are speakers separated?
  unitvox diagnose training   --config jobs/base.yaml --run RUN                  # health of a finished or running training

Each writes RUN/diagnose/<kind>/report.json, report.md and PNG plots, and prints its key findings;
`all` runs each that the run is ready for and links them from RUN/diagnose/report.md.
The exit code is 0 whenever the diagnosis could be made, whatever it found."""
ALL_HELP = "every diagnosis the run is ready for, with an index of their verdicts in RUN/diagnose/report.md"


def diagnosis_module(kind: str) -> ModuleType:
    return importlib.import_module(DIAGNOSES[kind])


def add_arguments(parser: argparse.ArgumentParser, add_run_arguments) -> None:
    """A subcommand per diagnosis, each with the run arguments and its own flags, and `all`."""
    kinds = parser.add_subparsers(dest="diagnosis", required=True, metavar="DIAGNOSIS")
    for kind in DIAGNOSES:
        module = diagnosis_module(kind)
        sub = kinds.add_parser(kind, help=module.HELP, description=module.HELP, epilog=module.EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_run_arguments(sub)
        module.add_arguments(sub)
    every = kinds.add_parser("all", help=ALL_HELP, description=ALL_HELP, epilog=EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(every)


def run(args: argparse.Namespace) -> int:
    config = load(args.config, args.overrides)
    store = open_store(args.run)
    if args.diagnosis == "all":
        print("\n".join(diagnose_all(config, store)))
        return 0
    diagnosis = diagnosis_module(args.diagnosis).from_arguments(config, store, args)
    write_diagnosis(store, diagnosis)
    print("\n".join(diagnosis.lines(store)))
    return 0


def diagnose_all(config: Config, store: Store) -> list[str]:
    """Run every diagnosis with its defaults, write each report and the index; returns the lines to print.

    A diagnosis the run is not ready for (no training yet, say) is listed with the reason.
    """
    outcomes: list[tuple[str, Diagnosis | None, str]] = []
    for kind in DIAGNOSES:
        module = diagnosis_module(kind)
        defaults = argparse.ArgumentParser(add_help=False)
        module.add_arguments(defaults)
        try:
            diagnosis = module.from_arguments(config, store, defaults.parse_args([]))
        except IncompleteError as waiting:
            outcomes.append((kind, None, str(waiting)))
            continue
        write_diagnosis(store, diagnosis)
        outcomes.append((kind, diagnosis, ""))
    store.write_text(INDEX, index_markdown(store.uri, outcomes))
    lines = []
    for kind, diagnosis, reason in outcomes:
        lines += diagnosis.lines(store)[:-1] if diagnosis else [f"{kind}: not run: {reason}"]
    return lines + [f"report: {store.url(INDEX)}"]


def index_markdown(run: str, outcomes: list[tuple[str, Diagnosis | None, str]]) -> str:
    rows = [[kind, diagnosis.status.upper() if diagnosis else "not run",
             diagnosis.verdict if diagnosis else reason,
             f"[report]({kind}/report.md)" if diagnosis else ""] for kind, diagnosis, reason in outcomes]
    return "\n".join([f"# Diagnoses of `{run}`", "", *markdown_table(["diagnosis", "status", "verdict", ""], rows),
                      "", "Rebuild: `unitvox diagnose all --config ... --run RUN`.", ""])
