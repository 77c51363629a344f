"""What every diagnosis returns and writes: a verdict, key findings, a JSON body, Markdown and PNG plots.

`unitvox diagnose <kind>` writes RUN/diagnose/<kind>/report.json, report.md and the plots beside them,
then prints the verdict and findings. A diagnosis only reads the run; rerunning it overwrites its report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from unitvox import __version__
from unitvox.report import json_safe
from unitvox.layout import DIAGNOSE, diagnosis_folder
from unitvox.store import Store

__all__ = ["DIAGNOSE", "OK", "PROBLEM", "STATUS_WORDS", "WARNING", "Diagnosis", "figure_link", "write_diagnosis"]

OK, WARNING, PROBLEM = "ok", "warning", "problem"
# What each status means, for the Markdown report's first line.
STATUS_WORDS = {OK: "nothing wrong found", WARNING: "worth a look", PROBLEM: "a problem found"}


@dataclass
class Diagnosis:
    """One diagnosis of a run.

    Attributes:
        kind: `data`, `checkpoint`, `embeddings` or `training`: the folder under RUN/diagnose/.
        status: `ok`, `warning` or `problem`.
        verdict: one line that answers the question the diagnosis asks.
        findings: the key findings, most important first, each a sentence a user can act on.
        details: the machine-readable body of report.json (plain JSON values).
        sections: Markdown sections of the human report (each starting with its `## ` heading).
        figures: PNG plots by file name (`levels.png`), written beside the report and linked from it.
    """

    kind: str
    status: str
    verdict: str
    findings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUS_WORDS:
            raise ValueError(f"status must be one of {list(STATUS_WORDS)}, got {self.status!r}")

    @property
    def folder(self) -> str:
        return diagnosis_folder(self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "verdict": self.verdict, "findings": self.findings,
                "figures": sorted(self.figures), "unitvox": __version__, "written_at": round(time.time(), 3),
                **self.details}

    def markdown(self, run: str) -> str:
        lines = [f"# Diagnosis: {self.kind}", "", f"Run: `{run}`", "",
                 f"**{self.status.upper()}** ({STATUS_WORDS[self.status]}): {self.verdict}", ""]
        if self.findings:
            lines += ["## Findings", "", *(f"- {finding}" for finding in self.findings), ""]
        for section in self.sections:
            lines += [section.rstrip(), ""]
        lines += [f"Machine-readable: `report.json`. Rebuild: `unitvox diagnose {self.kind} --config ... --run {run}`.",
                  ""]
        return "\n".join(lines)

    def lines(self, store: Store) -> list[str]:
        """What the command prints: the verdict, the findings and where the report is."""
        shown = [f"{self.kind}: {self.status.upper()}: {self.verdict}"]
        shown += [f"  - {finding}" for finding in self.findings]
        shown.append(f"report: {store.url(f'{self.folder}/report.md')}")
        return shown


def write_diagnosis(store: Store, diagnosis: Diagnosis) -> list[str]:
    """Write the plots, report.md and report.json (last) under RUN/diagnose/<kind>/; returns the keys written."""
    written = []
    for name, png in sorted(diagnosis.figures.items()):
        key = f"{diagnosis.folder}/{name}"
        store.write_bytes(key, png)
        written.append(key)
    for name, text in (("report.md", diagnosis.markdown(store.uri)),
                       ("report.json", json.dumps(json_safe(diagnosis.to_dict()), indent=2, allow_nan=False) + "\n")):
        key = f"{diagnosis.folder}/{name}"
        store.write_text(key, text)
        written.append(key)
    return written


def figure_link(name: str, caption: str) -> str:
    """A Markdown image line for a plot written beside the report."""
    return f"![{caption}]({name})"
