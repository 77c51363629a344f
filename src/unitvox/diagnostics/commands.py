"""`unitvox diagnose data | checkpoint | embeddings | training`: the thin command over each diagnosis.

Run: unitvox diagnose data --config jobs/demo.yaml --run ./runs/demo

Each diagnosis module defines `HELP`, `EXAMPLES`, `add_arguments(parser)` for its own flags and
`from_arguments(config, store, args) -> Diagnosis`, which calls its library function.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from unitvox.config import load
from unitvox.diagnostics.report import write_diagnosis
from unitvox.store import open_store

# Each diagnosis in the order `--help` lists them.
DIAGNOSES = {
    "data": "unitvox.diagnostics.data",
    "checkpoint": "unitvox.diagnostics.checkpoint",
    "embeddings": "unitvox.diagnostics.embeddings",
    "training": "unitvox.diagnostics.training",
}

EXAMPLES = """examples:
  unitvox diagnose data       --config jobs/base.yaml --run RUN                  # why is validation SNR negative?
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN --checkpoint URI # does it fit the model the config builds?
  unitvox diagnose embeddings --config jobs/base.yaml --run RUN                  # how well are speakers separated?
  unitvox diagnose training   --config jobs/base.yaml --run RUN                  # health of a finished or running training

Each writes RUN/diagnose/<kind>/report.json, report.md and PNG plots, and prints its key findings.
The exit code is 0 whenever the diagnosis could be made, whatever it found."""


def diagnosis_module(kind: str) -> ModuleType:
    return importlib.import_module(DIAGNOSES[kind])


def add_arguments(parser: argparse.ArgumentParser, add_run_arguments) -> None:
    """A subcommand per diagnosis, each with the run arguments and its own flags."""
    kinds = parser.add_subparsers(dest="diagnosis", required=True, metavar="DIAGNOSIS")
    for kind in DIAGNOSES:
        module = diagnosis_module(kind)
        sub = kinds.add_parser(kind, help=module.HELP, description=module.HELP, epilog=module.EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_run_arguments(sub)
        module.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    config = load(args.config, args.overrides)
    store = open_store(args.run)
    diagnosis = diagnosis_module(args.diagnosis).from_arguments(config, store, args)
    write_diagnosis(store, diagnosis)
    print("\n".join(diagnosis.lines(store)))
    return 0
