"""Does a checkpoint fit the model the config builds, and if not, what change or key remapping makes it load?

Run: unitvox diagnose checkpoint --config jobs/base.yaml --run ./runs/exp1 --checkpoint s3://bucket/old/latest.pt

`unitvox diagnose checkpoint` calls `diagnose_checkpoint`; so can a notebook:

    from unitvox.config import load
    from unitvox.diagnostics.checkpoint.checkpoint_diagnosis import diagnose_checkpoint
    from unitvox.store import open_store
    print(diagnose_checkpoint(load("jobs/base.yaml"), open_store("./runs/exp1"), "old.pt").verdict)

Every config change and remapping it offers has been checked by building that model and loading
the (renamed) weights into it with `strict=True`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any

import torch

from unitvox.config import (
    Config, ConfigError, apply_overrides, expand_generator_preset, from_dict,
)
from unitvox.diagnostics.checkpoint import checkpoint_report as report
from unitvox.diagnostics.checkpoint.checkpoint_files import UNITVOX, Source, converted_payload, read_checkpoint, remap_location
from unitvox.diagnostics.checkpoint.keys import Fit, compare, fit, strip_prefixes
from unitvox.diagnostics.diagnosis import Diagnosis
from unitvox.diagnostics.checkpoint.structure import (
    GENERATOR_PARTS, INFER, config_overrides, generator_target, infer_structure, structure_differences,
)
from unitvox.layout import CODEBOOK_FINGERPRINT, DIAGNOSE_REMAPPED as REMAPPED
from unitvox.store import Store
from unitvox.units.kmeans import read_fingerprint, unit_count
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.generator import build_generator

KIND = "checkpoint"

HELP = "does a checkpoint fit the model the config builds? missing and unexpected keys, the fix, --remap"
EXAMPLES = f"""examples:
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN                         # the run's latest
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN --checkpoint s3://bucket/old/latest.pt
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN --checkpoint hifigan.safetensors --remap
  unitvox diagnose checkpoint --config jobs/base.yaml --run RUN --checkpoint old.pt --remap s3://bucket/fixed.pt

Reads a unitvox checkpoint, a bare state dict (a .pt of tensors, module./_orig_mod. prefixes welcome)
or a .safetensors file. With --remap, a checkpoint that loads after renaming keys is written as a
unitvox checkpoint (default RUN/{REMAPPED}).
Writes RUN/diagnose/checkpoint/report.json and report.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint to diagnose: latest, best, a key in the run, a path or "
                                             "a URI (default: diagnose.checkpoint.checkpoint)")
    parser.add_argument("--remap", nargs="?", const=REMAPPED, default=None, metavar="URI",
                        help=f"write the converted checkpoint when a remapping makes it load (default RUN/{REMAPPED})")


def from_arguments(config: Config, store: Store, args: argparse.Namespace) -> Diagnosis:
    return diagnose_checkpoint(config, store, args.checkpoint, remap_to=args.remap)


@dataclass
class Candidate:
    """A config to load the checkpoint into, and how the checkpoint's keys fit the model it builds."""

    label: str
    overrides: list[str]
    config: Config | None
    num_units: int
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fit: Fit | None = None
    strict_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def loads(self) -> bool:
        return self.fit is not None and self.fit.loads and self.strict_error is None

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.label, "overrides": self.overrides, "verified": self.loads,
                "needs_remap": bool(self.loads and self.fit.rules), "num_units": self.num_units,
                "strict_load_error": self.strict_error, "notes": self.notes,
                "residual": self.fit.residual.counts() if self.fit else None}


def diagnose_checkpoint(config: Config, store: Store, checkpoint: str | None = None, *,
                        remap_to: str | None = None) -> Diagnosis:
    """Set a checkpoint against the generator `config` builds (LoRA applied as training would).

    Args:
        config: the config whose `train.generator` the checkpoint should fit (and `diagnose.checkpoint`).
        store: the run's root; its codebook gives the number of units (else the checkpoint's embedding).
        checkpoint: `latest`, `best`, a key in the run, a path or a URI (default `diagnose.checkpoint.checkpoint`).
        remap_to: where to write the converted checkpoint when a remapping makes it load (a key in the run
            or a URI); None writes nothing.

    Returns:
        The diagnosis: missing, unexpected and mismatched keys by module group, the structure the
        checkpoint expects, the verified config change or remapping, and what `remap_to` got.

    Raises:
        ConfigError: the checkpoint does not exist or holds nothing unitvox can read.
    """
    settings = config.diagnose.checkpoint
    source = read_checkpoint(store, checkpoint or settings.checkpoint)
    codebook = read_fingerprint(store) if store.exists(CODEBOOK_FINGERPRINT) else None
    num_units, units_from = _unit_count(codebook, source, config)
    current = _try(config, "config", [], source.state, num_units)
    as_is = compare(source.state, current.shapes)
    structure = infer_structure(current.fit.state)
    expected = ckpt.describe_model(config, codebook or {"k": num_units})
    description_diffs = _description_differences(source, expected, codebook is not None)
    needs_change = not current.loads or any(not diff.startswith(("codebook", "num_units"))
                                            for diff in description_diffs)
    candidates = _candidates(config, source, structure, num_units) if needs_change else []
    chosen = current if current.loads else next((c for c in candidates if c.loads), None)
    remap = _remap(store, source, chosen, codebook, remap_to) if remap_to is not None else None
    details = {
        "checkpoint": source.to_dict(),
        "model": {"keys": len(current.shapes), "num_units": num_units, "num_units_from": units_from,
                  "structure": infer_structure(_placeholders(current.shapes))},
        "loads": as_is.clean, "summary": as_is.summary(), "counts": as_is.counts(), "groups": as_is.by_group(),
        "description_differences": description_diffs if source.payload is not None else None,
        "structure": structure,
        "structure_differences": structure_differences(structure, config.train.generator, num_units),
        "remapping": _remapping_details(current),
        "suggestions": [candidate.to_dict() for candidate in candidates],
        "remap": remap,
    }
    status, verdict = report.verdict(details)
    return Diagnosis(KIND, status, verdict, report.findings(details, settings.keys_shown), details,
                     report.sections(details, settings.keys_shown))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _placeholders(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Storage-free tensors of the model's shapes, for reading its structure the way a checkpoint's is read."""
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def _unit_count(codebook: dict[str, Any] | None, source: Source, config: Config) -> tuple[int, str]:
    """The codebook's k; without one, what the checkpoint's embedding holds; else tokenize.kmeans.k."""
    if codebook is not None:
        return unit_count(codebook), "codebook"
    stripped, _, _ = strip_prefixes(source.state, set(GENERATOR_PARTS))
    embedding = stripped.get("embedding.weight")
    if embedding is not None and embedding.dim() == 2 and embedding.shape[0] > 1:
        return int(embedding.shape[0]) - 1, "checkpoint embedding"
    return config.tokenize.kmeans.k, "tokenize.kmeans.k"


def _try(config: Config, label: str, overrides: list[str], state: dict[str, torch.Tensor], num_units: int,
         notes: list[str] | None = None) -> Candidate:
    """Build the model `config` plus `overrides` makes, fit the keys to it and load them strictly."""
    candidate = Candidate(label, overrides, None, num_units, notes=list(notes or []))
    try:
        candidate.config = config_with(config, overrides) if overrides else config
    except ConfigError as error:
        candidate.notes.append(f"the change makes no valid config: {error}")
        return candidate
    model = build_generator(candidate.config.train.generator, num_units)
    candidate.shapes = _shapes(model)
    candidate.fit = fit(state, candidate.shapes)
    if candidate.fit.loads:
        try:
            model.load_state_dict(candidate.fit.state, strict=True)
        except RuntimeError as error:
            candidate.strict_error = str(error).strip().splitlines()[0]
    return candidate


def config_with(config: Config, overrides: list[str]) -> Config:
    """`config` with `--set` overrides applied the way `load` applies them; validated."""
    raw = expand_generator_preset(apply_overrides(config.to_dict(), overrides))
    changed = from_dict(Config, raw)
    changed.check()
    return changed


def _description_differences(source: Source, expected: dict[str, Any], have_codebook: bool) -> list[str]:
    """Where a unitvox checkpoint's saved description and the config's differ (evaluate refuses on any)."""
    if source.payload is None or not isinstance(source.payload.get("model"), dict):
        return []
    saved = dict(source.payload["model"])
    if not have_codebook:
        saved.pop("codebook", None)
        expected = {key: value for key, value in expected.items() if key != "codebook"}
    return ckpt.differences(saved, expected)


def _candidates(config: Config, source: Source, structure: dict[str, Any], num_units: int) -> list[Candidate]:
    """Config changes to try, verified in order: a unitvox checkpoint's own description, then the weights'."""
    units = structure.get("num_units", num_units)
    tried, found = set(), []
    saved = source.payload.get("model") if source.payload is not None else None
    if isinstance(saved, dict) and isinstance(saved.get("generator"), dict):
        overrides = config_overrides(config.train, saved["generator"], saved.get("speaker"))
        if overrides:
            found.append(_try(config, "saved description", overrides, source.state, units))
            tried.add(tuple(overrides))
    target, notes = generator_target(structure, config.train.generator)
    overrides = config_overrides(config.train, target, INFER)
    if overrides and tuple(overrides) not in tried and not (found and found[0].loads):
        found.append(_try(config, "weights", overrides, source.state, units, notes))
    if units != num_units:
        for candidate in found:
            candidate.notes.append(f"verified with the checkpoint's {units} units; the run's codebook has "
                                   f"{num_units}, and no config key changes that")
    return found


def _remapping_details(current: Candidate) -> dict[str, Any]:
    fitted = current.fit
    return {"found": current.loads and bool(fitted.rules), "loads_after": current.loads,
            "rules": [dataclasses.asdict(rule) for rule in fitted.rules], "renamed": fitted.renamed,
            "residual": fitted.residual.counts(), "residual_groups": fitted.residual.by_group()}


def _remap(store: Store, source: Source, chosen: Candidate | None, codebook: dict[str, Any] | None,
           target: str) -> dict[str, Any]:
    """Write the converted checkpoint when one loads; otherwise say why nothing was written."""
    if chosen is None:
        return {"written": None, "reason": "no config change or key remapping found makes it load strictly"}
    if source.format == UNITVOX and not chosen.fit.rules:
        return {"written": None, "reason": "its keys already fit" + (" (with the suggested config change)"
                                                                   if chosen.overrides else "")
                + ": nothing to convert"}
    description = ckpt.describe_model(chosen.config, codebook or {"k": chosen.num_units})
    payload = converted_payload(source, chosen.fit.state, description, [rule.line() for rule in chosen.fit.rules])
    target_store, key = remap_location(store, target)
    ckpt.save(target_store, key, payload)
    written = ckpt.load(target_store, key)  # read back the way every stage reads checkpoints
    build_generator(chosen.config.train.generator, chosen.num_units).load_state_dict(written["generator"], strict=True)
    uri = target_store.url(key)
    return {"written": uri, "reason": None, "overrides": chosen.overrides, "use": _uses(chosen, written, uri),
            "rules": [rule.line() for rule in chosen.fit.rules]}


def _uses(chosen: Candidate, payload: dict[str, Any], uri: str) -> list[str]:
    """The `--set` lines that put the converted checkpoint to work, with what each needs."""
    settings = chosen.config.train
    changes = "".join(f" --set {shlex.quote(override)}" for override in chosen.overrides)
    uses = []
    if not settings.speaker.enabled or "speaker_encoder" in payload:
        uses.append(f"unitvox evaluate --config ... --run RUN{changes} --set evaluate.checkpoint={uri}")
    else:
        uses.append("evaluate needs the speaker encoder's weights, which this checkpoint lacks: train from it first")
    if not settings.generator.lora.rank:
        uses.append(f"unitvox train --config ... --run NEW_RUN{changes} --set train.init_from={uri}")
    return uses
