"""Words for `diagnose checkpoint`: the one-line verdict, the findings and the Markdown sections."""

from __future__ import annotations

import shlex
from collections import defaultdict
from typing import Any

from unitvox.diagnostics.checkpoint.keys import group_pattern, natural_key
from unitvox.diagnostics.diagnosis import OK, PROBLEM, WARNING
from unitvox.report import markdown_table

STRUCTURE_ROWS = ("type", "num_units", "embedding_dim", "upsample_initial_channels", "stages",
                  "upsample_kernel_sizes", "blocks_per_fusion", "resblock", "resblock_kernel_sizes",
                  "dilations_per_block", "groups", "backbone_dim", "backbone_intermediate_dim", "backbone_layers",
                  "frames_per_unit", "n_fft", "lora", "speaker_embedding_dim")
GROUPS_SHOWN = 6
DIFFERENCES_SHOWN = 5


def set_flags(overrides: list[str]) -> str:
    """`--set a=1 --set 'b=[3,7,11]'`, quoted for a shell."""
    return " ".join(f"--set {shlex.quote(override)}" for override in overrides)


def rule_words(rule: dict[str, Any]) -> str:
    if rule["kind"] == "prefix":
        return f"dropping the prefix {rule['old']}"
    if rule["kind"] == "weight_norm_names":
        return "renaming weight_g/weight_v to parametrizations.weight.original0/original1"
    if rule["kind"] == "weight_norm_fold":
        return "giving plain weights their weight norm"
    return f"renaming {rule['old']} -> {rule['new']}"


def _fix(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((candidate for candidate in candidates if candidate["verified"]), None)


def verdict(details: dict[str, Any]) -> tuple[str, str]:
    """(status, one line) answering: does this checkpoint load into the model the config builds?"""
    diffs = details["description_differences"] or []
    codebook_diffs = [diff for diff in diffs if diff.startswith(("codebook", "num_units"))]
    config_diffs = [diff for diff in diffs if diff not in codebook_diffs]
    fix, remapping, remap = _fix(details["suggestions"]), details["remapping"], details["remap"]
    if details["loads"]:
        if config_diffs:
            line = (f"the weights load, but its saved description differs from the config in {len(config_diffs)} "
                    f"keys ({config_diffs[0].split(':')[0]} ...), so evaluate and train.init_from refuse it")
            return WARNING, line + (f" — it fits with {set_flags(fix['overrides'])}" if fix else "")
        if codebook_diffs:
            return PROBLEM, (f"the weights load, but it was trained on another codebook "
                             f"({codebook_diffs[0].split(':')[0]} differs): its units mean other things")
        if details["checkpoint"]["format"] != "unitvox":
            return OK, ("loads into the model the config builds (a bare state dict: --remap writes it as a "
                        "unitvox checkpoint)")
        return OK, "loads into the model the config builds"
    line = f"does not load: {details['summary']}"
    if remapping["found"]:
        how = "; ".join(rule_words(rule) for rule in remapping["rules"])
        done = (f"converted to {remap['written']}" if remap and remap["written"]
                else "rerun with --remap to write the converted checkpoint")
        return PROBLEM, f"{line}; {how} makes it load — {done}"
    reason = f"; {details['structure_differences'][0]}" if details["structure_differences"] else ""
    if fix:
        remapped = " and remap its keys (--remap)" if fix["needs_remap"] else ""
        return PROBLEM, f"{line}{reason} — it loads with {set_flags(fix['overrides'])}{remapped}"
    return PROBLEM, f"{line}{reason}; no config change or key remapping found that makes it load"


def findings(details: dict[str, Any], keys_shown: int) -> list[str]:
    """The key findings, most important first."""
    found = [] if details["loads"] else _group_lines(details["groups"], keys_shown)
    found += details["structure_differences"]
    diffs = details["description_differences"] or []
    found += [f"saved description differs: {diff}" for diff in diffs[:DIFFERENCES_SHOWN]]
    if len(diffs) > DIFFERENCES_SHOWN:
        found.append(f"... and {len(diffs) - DIFFERENCES_SHOWN} more differences in the saved description")
    remapping = details["remapping"]
    if remapping["rules"] and not details["loads"]:
        rules = "; ".join(rule_words(rule) for rule in remapping["rules"])
        found.append(f"key remapping that makes it load (verified by a strict load): {rules}" if remapping["found"]
                     else f"renaming rules that apply, but do not make it load on their own: {rules}")
    for candidate in details["suggestions"]:
        found.append(_candidate_line(candidate))
        found += candidate["notes"]
    if any(candidate["from"] == "weights" for candidate in details["suggestions"]):
        found.append("not stored in the weights, so kept from the config or guessed: "
                     + "; ".join(details["structure"]["unknown"]))
    remap = details["remap"]
    if remap:
        found.append(f"wrote {remap['written']} (loads strictly); use it: " + " | ".join(remap["use"])
                     if remap["written"] else f"--remap wrote nothing: {remap['reason']}")
    return found


def _candidate_line(candidate: dict[str, Any]) -> str:
    source = "its saved description" if candidate["from"] == "saved description" else "the weights"
    if candidate["verified"]:
        remap = " plus the key remapping (--remap)" if candidate["needs_remap"] else ""
        return (f"config change from {source} that makes it load (verified by a strict load): "
                f"{set_flags(candidate['overrides'])}{remap}")
    left = candidate["residual"]
    still = (f"; {left['missing']} missing, {left['unexpected']} unexpected and {left['mismatched']} mismatched keys "
             "remain" if left else "")
    error = f"; strict load: {candidate['strict_load_error']}" if candidate["strict_load_error"] else ""
    return (f"partial: the config change from {source} does not make it load on its own: "
            f"{set_flags(candidate['overrides'])}{still}{error}")


def _group_lines(groups: dict[str, dict[str, list]], keys_shown: int) -> list[str]:
    """One line per group pattern (`resblocks.*.blocks.2`), the largest first, with example keys."""
    patterns: dict[str, dict[str, list]] = defaultdict(lambda: {"missing": [], "unexpected": [], "mismatched": []})
    for group, found in groups.items():
        for kind, keys in found.items():
            patterns[group_pattern(group)][kind] += keys
    ordered = sorted(patterns, key=lambda pattern: -sum(len(keys) for keys in patterns[pattern].values()))
    lines = []
    for pattern in ordered[:GROUPS_SHOWN]:
        found = patterns[pattern]
        counts = ", ".join(f"{len(found[kind])} {word}" for kind, word in
                           (("missing", "missing"), ("unexpected", "unexpected"), ("mismatched", "mismatched in shape"))
                           if found[kind])
        examples = [*found["missing"], *found["unexpected"], *(item["key"] for item in found["mismatched"])]
        lines.append(f"{pattern}: {counts} (e.g. {', '.join(examples[:keys_shown])})")
    if len(ordered) > GROUPS_SHOWN:
        lines.append(f"... and {len(ordered) - GROUPS_SHOWN} more module groups (report.json lists them all)")
    return lines


def sections(details: dict[str, Any], keys_shown: int) -> list[str]:
    """Markdown sections: keys by group, structure, saved description, fixes, the converted checkpoint."""
    found = [_keys_section(details, keys_shown), _structure_section(details)]
    if details["description_differences"]:
        found.append("\n".join(["## Saved description versus the config", "",
                                *(f"- {diff}" for diff in details["description_differences"])]))
    if details["suggestions"]:
        lines = ["## Config changes", ""]
        for candidate in details["suggestions"]:
            lines += [f"- {_candidate_line(candidate)}", *(f"  - {note}" for note in candidate["notes"])]
        found.append("\n".join(lines))
    if details["remapping"]["rules"]:
        rows = [[rule["kind"], f"`{rule['old']}`", f"`{rule['new']}`", rule["keys"], rule["how"]]
                for rule in details["remapping"]["rules"]]
        state = "makes it load" if details["remapping"]["loads_after"] else "does not make it load on its own"
        found.append("\n".join([f"## Key remapping ({state})", "",
                                *markdown_table(["rule", "from", "to", "keys", "how"], rows)]))
    remap = details["remap"]
    if remap:
        lines = ["## Converted checkpoint", ""]
        lines += ([f"Written: `{remap['written']}`", "", *(f"    {use}" for use in remap["use"])]
                  if remap["written"] else [f"Nothing written: {remap['reason']}."])
        found.append("\n".join(lines))
    return found


def _keys_section(details: dict[str, Any], keys_shown: int) -> str:
    counts = details["counts"]
    lines = ["## Keys by module group", "",
             f"Checkpoint `{details['checkpoint']['uri']}` ({details['checkpoint']['format']}, "
             f"{details['checkpoint']['keys']} keys) against the model the config builds "
             f"({details['model']['keys']} keys, {details['model']['num_units']} units from "
             f"{details['model']['num_units_from']}): {counts['missing']} missing, {counts['unexpected']} "
             f"unexpected, {counts['mismatched']} mismatched in shape.", ""]
    if not details["groups"]:
        return "\n".join(lines[:-1])
    rows = []
    for group in sorted(details["groups"], key=natural_key):
        found = details["groups"][group]
        examples = [*found["missing"], *found["unexpected"],
                    *(f"{item['key']} {tuple(item['checkpoint'])} vs {tuple(item['model'])}"
                      for item in found["mismatched"])]
        rows.append([group, len(found["missing"]), len(found["unexpected"]), len(found["mismatched"]),
                     ", ".join(examples[:keys_shown]) + (" ..." if len(examples) > keys_shown else "")])
    return "\n".join([*lines, *markdown_table(["module group", "missing", "unexpected", "mismatched", "keys"], rows)])


def _structure_section(details: dict[str, Any]) -> str:
    saved, ours = details["structure"], details["model"]["structure"]
    rows = [[name, _show(saved.get(name)), _show(ours.get(name))] for name in STRUCTURE_ROWS
            if name in saved or name in ours]
    return "\n".join(["## Structure the checkpoint expects", "",
                      *markdown_table(["", "checkpoint", "config"], rows), "",
                      "Not in the weights: " + "; ".join(saved["unknown"]) + "."])


def _show(value: Any) -> str:
    if value is None or isinstance(value, list) and all(item is None for item in value):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key} {item}" for key, item in value.items())
    return str(value)
