"""Run files are named once: every key under a run root is a constant of unitvox.layout, spelt nowhere else.

Run: .venv/bin/python -m pytest tests/test_layout.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

from unitvox import layout

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unitvox"
# Keys spelt in a module that another change is rewriting at present, each with the constant to use.
# Empty this as those modules import unitvox.layout; a key that is no longer spelt there fails below.
PENDING: dict[str, set[str]] = {}


def run_keys() -> dict[str, str]:
    """Layout's keys and file names (`a/b`, `x.json`), by constant; bare stage names are words too common to police.

    `config.yaml` is left out too: the controller's ConfigMaps hold a file of the same name.
    """
    return {name: value for name, value in vars(layout).items()
            if name.isupper() and isinstance(value, str) and ("/" in value or "." in value)
            and value != layout.CONFIG}


def _spells(literal: str, key: str) -> bool:
    """Whether a literal (or an f-string piece, `/_SUCCESS.json` of `f"{stage}/_SUCCESS.json"`) spells `key`."""
    if literal == key:
        return True
    is_path = literal and not any(character.isspace() for character in literal)  # prose may name a file
    return bool(is_path) and (literal.endswith(f"/{key}") or literal.startswith(f"{key}/"))


def spelt(path: Path, keys: set[str]) -> set[str]:
    """The keys that a module writes in a string literal (f-string pieces included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return {key for key in keys for literal in literals if _spells(literal, key)}


def test_the_layout_holds_every_kind_of_run_file():
    keys = set(run_keys().values())
    assert {"_SUCCESS.json", "codebook.json", "centroids.npy", "prepare/manifest.jsonl", "tokenize/units.jsonl",
            "train/split.json", "train/training_log.jsonl", "train/checkpoints", "train/health",
            "evaluate/metrics.json", "evaluate/summary.md", "evaluate/junit.xml", "bpe/motifs.json"} <= keys


def test_the_check_finds_a_key_spelt_out(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text('LOG = "train/training_log.jsonl"\nkey = f"{prefix}/_SUCCESS.json"\n'
                      'BEST = "train/checkpoints/best.pt"\nHELP = "rerun even when _SUCCESS.json matches"\n')
    assert spelt(module, set(run_keys().values())) == {"train/training_log.jsonl", "_SUCCESS.json",
                                                      "train/checkpoints", "train/checkpoints/best.pt"}


def test_every_run_key_is_spelt_only_in_the_layout():
    keys = set(run_keys().values())
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "layout.py":
            continue
        extra = spelt(path, keys) - PENDING.get(relative, set())
        if extra:
            found[relative] = sorted(extra)
    assert found == {}


def test_pending_exceptions_are_still_needed():
    keys = set(run_keys().values())
    for relative, allowed in PENDING.items():
        assert allowed <= spelt(PACKAGE / relative, keys), f"{relative} no longer spells them: drop it from PENDING"
