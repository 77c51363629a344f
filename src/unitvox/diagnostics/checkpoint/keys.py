"""State-dict keys against a model's: what is missing, unexpected or of another shape, and renamings that fit.

Pure functions over `{key: tensor}` and `{key: shape}`; `diagnose checkpoint` builds the models and
verifies every remapping offered here with a strict `load_state_dict`.

Renaming rules, tried in this order:
1. wrapper prefixes: `module.` (DistributedDataParallel) and `_orig_mod.` (torch.compile) are dropped,
   and a checkpoint whose keys all sit under one outer name (`generator.`) is read from under it;
2. old weight-norm names (`torch.nn.utils.weight_norm`): `weight_g` / `weight_v` become
   `parametrizations.weight.original0` / `original1`;
3. a plain `weight` where the model has weight norm (an export with weight norm folded away) becomes
   g = |w| and v = w, which computes the same weight;
4. a renamed top-level module (`conv_pre` for `pre_conv`) whose keys and shapes all match;
5. renamed sub-modules within one module group (`conv.0` for `conv1`): unexpected and missing keys of
   the group paired by parameter name, shape and order, when every old module maps to one new one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
WEIGHT_NORM = "parametrizations.weight"
OLD_WEIGHT_NORM = {"weight_g": f"{WEIGHT_NORM}.original0", "weight_v": f"{WEIGHT_NORM}.original1"}

Shape = tuple[int, ...]


def group_of(key: str) -> str:
    """The module group a key belongs to: up to its second index (`resblocks.1.blocks.2`), else its first
    (`upsamples.0`), else its first name (`pre_conv`); a wrapper prefix stays in front (`module.pre_conv`)."""
    wrapper = ""
    while key.startswith(WRAPPER_PREFIXES) and key.count(".") > 1:
        head, key = key.split(".", 1)
        wrapper += f"{head}."
    parts = key.split(".")
    indexes = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    if not indexes:
        return wrapper + parts[0]
    return wrapper + ".".join(parts[: indexes[min(1, len(indexes) - 1)] + 1])


def group_pattern(group: str) -> str:
    """A group with its first index (the stage) starred: `resblocks.*.blocks.2` is block 2 of every stage."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", group, count=1)


def natural_key(key: str) -> list:
    """Sort key that orders `conv1s.2` before `conv1s.10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def leaf_of(key: str) -> str:
    """The parameter's own name: `bias`, `weight` or `parametrizations.weight.original0`."""
    head, found, tail = key.partition(f".{WEIGHT_NORM}.")
    return f"{WEIGHT_NORM}.{tail}" if found else key.rsplit(".", 1)[-1]


def module_of(key: str) -> str:
    return key[: -len(leaf_of(key)) - 1] if "." in key else ""


@dataclass
class Comparison:
    """Keys of a state dict set against a model's: missing, unexpected and present with another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self) -> dict[str, int]:
        return {"missing": len(self.missing), "unexpected": len(self.unexpected), "mismatched": len(self.mismatched)}

    def by_group(self) -> dict[str, dict[str, list]]:
        """Per module group: its missing and unexpected keys and its shape mismatches, groups in key order."""
        groups: dict[str, dict[str, list]] = defaultdict(lambda: {"missing": [], "unexpected": [], "mismatched": []})
        for key in self.missing:
            groups[group_of(key)]["missing"].append(key)
        for key in self.unexpected:
            groups[group_of(key)]["unexpected"].append(key)
        for key, saved, expected in self.mismatched:
            groups[group_of(key)]["mismatched"].append({"key": key, "checkpoint": list(saved), "model": list(expected)})
        return {group: groups[group] for group in sorted(groups, key=natural_key)}

    def summary(self, most: int = 3) -> str:
        """`24 missing and 36 unexpected keys in resblocks.*.blocks.2` (the groups with the most keys first)."""
        counts = self.counts()
        words = [f"{counts['missing']} missing", f"{counts['unexpected']} unexpected",
                 f"{counts['mismatched']} mismatched"]
        parts = [word for word, count in zip(words, counts.values()) if count]
        parts = [", ".join(parts[:-1]), parts[-1]] if len(parts) > 2 else parts
        per_pattern: dict[str, int] = defaultdict(int)
        for group, found in self.by_group().items():
            per_pattern[group_pattern(group)] += sum(len(keys) for keys in found.values())
        patterns = sorted(per_pattern, key=lambda pattern: -per_pattern[pattern])
        more = f" and {len(patterns) - most} more groups" if len(patterns) > most else ""
        where = ", ".join(patterns[:most]) + more
        noun = "key" if sum(counts.values()) == 1 else "keys"
        return f"{' and '.join(parts)} {noun} in {where}" if parts else "no key differences"


def compare(state: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> Comparison:
    missing = [key for key in shapes if key not in state]
    unexpected = [key for key in state if key not in shapes]
    mismatched = [(key, tuple(state[key].shape), tuple(shapes[key])) for key in shapes
                  if key in state and tuple(state[key].shape) != tuple(shapes[key])]
    return Comparison(missing, unexpected, mismatched)


@dataclass
class Rule:
    """One renaming applied to a checkpoint, with the number of keys it touched."""

    kind: str
    old: str
    new: str
    keys: int
    how: str

    def line(self) -> str:
        return f"{self.old} -> {self.new} ({self.keys} keys; {self.how})"


@dataclass
class Fit:
    """A state dict after the renaming rules, and what still differs from the model."""

    state: dict[str, torch.Tensor]
    renamed: dict[str, str]
    rules: list[Rule]
    residual: Comparison

    @property
    def loads(self) -> bool:
        return self.residual.clean


def fit(state: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> Fit:
    """Apply every renaming rule that helps; `loads` says whether nothing differs afterwards."""
    rules: list[Rule] = []
    renamed = {key: key for key in state}
    current = dict(state)
    children = {key.split(".", 1)[0] for key in shapes}
    for step in (lambda s: strip_prefixes(s, children), rename_old_weight_norm,
                 lambda s: fold_plain_weights(s, shapes), lambda s: match_families(s, shapes),
                 lambda s: match_within_groups(s, shapes)):
        current, mapping, found = step(current)
        renamed = {old: mapping.get(new, new) for old, new in renamed.items()}
        rules += found
    renamed = {old: new for old, new in renamed.items() if old != new}
    return Fit(current, renamed, rules, compare(current, shapes))


Step = tuple[dict[str, torch.Tensor], dict[str, str], list[Rule]]


def _rekey(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    return {mapping.get(key, key): tensor for key, tensor in state.items()}


def strip_prefixes(state: Mapping[str, torch.Tensor], children: set[str]) -> Step:
    """Drop `module.` / `_orig_mod.` wherever a key starts with them, then read from under one outer name."""
    mapping, dropped = {}, defaultdict(int)
    for key in state:
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            head, name = name.split(".", 1)
            dropped[f"{head}."] += 1
        if name != key:
            mapping[key] = name
    rules = [Rule("prefix", prefix, "", count, "wrapper prefix dropped") for prefix, count in dropped.items()]
    stripped = _rekey(state, mapping)
    if not stripped or any(key.split(".", 1)[0] in children for key in stripped):
        return stripped, mapping, rules
    outer = defaultdict(list)
    for key in stripped:
        head, _, rest = key.partition(".")
        if rest.split(".", 1)[0] in children:
            outer[head].append(key)
    if len(outer) != 1:
        return stripped, mapping, rules
    (head, keys), = outer.items()
    left_out = len(stripped) - len(keys)
    how = "outer name dropped" + (f"; {left_out} key{'s' * (left_out != 1)} outside it left out" if left_out else "")
    rules.append(Rule("prefix", f"{head}.", "", len(keys), how))
    inner = {key: key.split(".", 1)[1] for key in keys}
    mapping = {old: inner[new] for old, new in ((key, mapping.get(key, key)) for key in state) if new in inner}
    return {inner[key]: stripped[key] for key in keys}, mapping, rules


def rename_old_weight_norm(state: Mapping[str, torch.Tensor]) -> Step:
    mapping = {}
    for key in state:
        head, _, leaf = key.rpartition(".")
        if leaf in OLD_WEIGHT_NORM:
            mapping[key] = f"{head}.{OLD_WEIGHT_NORM[leaf]}" if head else OLD_WEIGHT_NORM[leaf]
    rules = [Rule("weight_norm_names", "*.weight_g, *.weight_v", f"*.{WEIGHT_NORM}.original0, *.original1",
                  len(mapping), "torch.nn.utils.weight_norm names to parametrizations")] if mapping else []
    return _rekey(state, mapping), mapping, rules


def fold_plain_weights(state: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> Step:
    """`P.weight` where the model has weight norm on P: v = w and g = |w| give back exactly w."""
    result, mapping, count = dict(state), {}, 0
    for key, tensor in state.items():
        head = key[: -len(".weight")] if key.endswith(".weight") else None
        magnitude, direction = f"{head}.{WEIGHT_NORM}.original0", f"{head}.{WEIGHT_NORM}.original1"
        if head is None or key in shapes or direction not in shapes or direction in state or magnitude in state:
            continue
        if tuple(tensor.shape) != tuple(shapes[direction]):
            continue
        kept = [dim for dim, size in enumerate(shapes[magnitude]) if size != 1]
        reduced = [dim for dim in range(tensor.dim()) if dim not in kept]
        del result[key]
        result[direction] = tensor
        result[magnitude] = torch.linalg.vector_norm(tensor, dim=reduced, keepdim=True)
        mapping[key] = direction
        count += 1
    rules = [Rule("weight_norm_fold", "*.weight", f"*.{WEIGHT_NORM}.original0 (|w|), *.original1 (w)", count,
                  "plain weights given weight norm; same outputs")] if count else []
    return result, mapping, rules


def match_families(state: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> Step:
    """A top-level name the model lacks whose keys and shapes are exactly those of one the checkpoint lacks."""
    def families(keys) -> dict[str, dict[str, Shape]]:
        found: dict[str, dict[str, Shape]] = defaultdict(dict)
        for key, shape in keys:
            head, _, rest = key.partition(".")
            found[head][rest] = tuple(shape)
        return found

    saved = families((key, tensor.shape) for key, tensor in state.items())
    expected = families(shapes.items())
    old_names = [name for name in saved if name not in expected]
    new_names = [name for name in expected if name not in saved]
    mapping, rules = {}, []
    for old in old_names:
        fits = [new for new in new_names if expected[new] == saved[old]]
        twins = [other for other in old_names if saved[other] == saved[old]]
        if len(fits) != 1 or len(twins) != 1:
            continue
        for rest in saved[old]:
            mapping[f"{old}.{rest}"] = f"{fits[0]}.{rest}"
        rules.append(Rule("rename", old, fits[0], len(saved[old]), "same keys and shapes under another name"))
    return _rekey(state, mapping), mapping, rules


def match_within_groups(state: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> Step:
    """Pair a group's unexpected keys with its missing ones by parameter name, shape and order."""
    comparison = compare(state, shapes)
    missing, unexpected = defaultdict(list), defaultdict(list)
    for key in comparison.missing:
        missing[group_of(key)].append(key)
    for key in comparison.unexpected:
        unexpected[group_of(key)].append(key)
    mapping: dict[str, str] = {}
    for group in sorted(set(missing) & set(unexpected), key=natural_key):
        pairs = _pair(unexpected[group], missing[group], state, shapes)
        if pairs:
            mapping.update(pairs)
    return _rekey(state, mapping), mapping, _rename_rules(mapping)


def _pair(old_keys: list[str], new_keys: list[str], state: Mapping[str, torch.Tensor],
          shapes: Mapping[str, Shape]) -> dict[str, str] | None:
    """Old -> new keys when every bucket of (parameter name, shape) balances and modules map one to one."""
    def buckets(keys, shape_of):
        found = defaultdict(list)
        for key in sorted(keys, key=natural_key):
            found[(leaf_of(key), tuple(shape_of(key)))].append(key)
        return found

    olds = buckets(old_keys, lambda key: state[key].shape)
    news = buckets(new_keys, lambda key: shapes[key])
    if set(olds) != set(news) or any(len(olds[bucket]) != len(news[bucket]) for bucket in olds):
        return None
    pairs = {old: new for bucket in olds for old, new in zip(olds[bucket], news[bucket])}
    modules: dict[str, str] = {}
    for old, new in pairs.items():
        if modules.setdefault(module_of(old), module_of(new)) != module_of(new):
            return None
    if len(set(modules.values())) != len(modules):
        return None
    return pairs


def _rename_rules(mapping: Mapping[str, str]) -> list[Rule]:
    """Renamed keys summarised as module renamings with indexes starred: `resblocks.*.blocks.*.conv.0 -> conv1`."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for old, new in mapping.items():
        old_parts, new_parts = module_of(old).split("."), module_of(new).split(".")
        start = 0
        while start < min(len(old_parts), len(new_parts)) and old_parts[start] == new_parts[start]:
            start += 1
        end = 0
        while (end < min(len(old_parts), len(new_parts)) - start
               and old_parts[len(old_parts) - 1 - end] == new_parts[len(new_parts) - 1 - end]):
            end += 1
        prefix = ".".join("*" if part.isdigit() else part for part in old_parts[:start])
        star = f"{prefix}." if prefix else ""
        counts[(star + ".".join(old_parts[start:len(old_parts) - end]),
                star + ".".join(new_parts[start:len(new_parts) - end]))] += 1
    return [Rule("rename", old, new, count, "matched by parameter name, shape and order within each module")
            for (old, new), count in sorted(counts.items())]
