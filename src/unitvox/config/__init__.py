"""Typed configuration: one dataclass per stage, loaded from YAML with includes and overrides.

Check a config without running anything: unitvox validate --config jobs/base.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from unitvox.config.cluster import ClusterConfig
from unitvox.config.common import ConfigError, require
from unitvox.config.data import (
    BpeConfig, ChecksConfig, FeaturesConfig, KMeansConfig, PipelineConfig, PrepareConfig, SplitConfig, TokenizeConfig,
)
from unitvox.config.diagnose import DiagnoseConfig
from unitvox.config.evaluate import EvaluateConfig
from unitvox.config.metrics import MetricsConfig
from unitvox.config.samples import SamplesConfig
from unitvox.config.train import (
    GENERATOR_PRESETS, GENERATOR_SIZES, GENERATOR_TYPES, RESIDUAL_BLOCKS, TERM_METRICS, DiscriminatorConfig,
    EarlyStoppingConfig, GeneratorConfig,
    LoraConfig, LossWeights, MelSpectrogramConfig, SpeakerConfig, TrainConfig, expand_generator_preset,
    generator_preset,
)
from unitvox.store import read_uri_text


@dataclass
class Config:
    """The whole pipeline's configuration; one section per stage."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    bpe: BpeConfig = field(default_factory=BpeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def check(self) -> None:
        for section in dataclasses.fields(self):
            getattr(self, section.name).check(section.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, stage: str) -> str:
        """Hash of what a stage's outputs depend on: its section, less the keys that only change how it runs."""
        return _hash_json(self.stage_section(stage))

    def stage_section(self, stage: str) -> dict[str, Any]:
        """A stage's section as plain data, less its EXECUTION_KEYS (at every level): what `stage_hash` hashes."""
        return _semantic(getattr(self, stage))


def _semantic(section: Any) -> Any:
    if not dataclasses.is_dataclass(section):
        return section
    skip = set(getattr(section, "EXECUTION_KEYS", ()))
    return {f.name: _semantic(getattr(section, f.name)) for f in dataclasses.fields(section) if f.name not in skip}


def _hash_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Building typed configs from plain data


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and wrong types by dotted key.

    A nested section given in part keeps its field's own defaults for the keys it leaves out,
    so `cluster.resources.train.memory` alone does not reset the train pod's GPU count.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{key or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        dotted = f"{key}.{name}" if key else str(name)
        if name not in fields:
            raise ConfigError(f"{dotted}: unknown key; known keys here: {sorted(fields)}")
        default = _section_default(fields[name])
        if default is not None and isinstance(value, dict):
            value = merge(default, value)
        kwargs[name] = _coerce(hints[name], value, dotted)
    return cls(**kwargs)


def _section_default(spec: dataclasses.Field) -> dict | None:
    """The default of a nested-section field as plain data, or None for any other field."""
    if spec.default_factory is dataclasses.MISSING:
        return None
    default = spec.default_factory()
    return dataclasses.asdict(default) if dataclasses.is_dataclass(default) else None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {hint.__name__}, got {_describe(value)}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------------------------------------
# YAML files, includes and --set overrides


def merge(base: dict, overlay: dict) -> dict:
    """Deep-merge `overlay` onto `base`: mappings merge, everything else is replaced."""
    result = dict(base)
    for name, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = merge(result[name], value)
        else:
            result[name] = value
    return result


def load_raw(uri: str, _seen: tuple[str, ...] = ()) -> dict:
    """Read a YAML config and the files it includes (`include:` a path or a list, relative to it)."""
    if uri in _seen:
        raise ConfigError(f"include: {uri} includes itself through {' -> '.join(_seen)}")
    try:
        text = read_uri_text(uri)
    except FileNotFoundError:
        where = f" (included from {_seen[-1]})" if _seen else ""
        raise ConfigError(f"config file not found: {uri}{where}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{uri}: the top level must be a mapping of stage sections")
    includes = data.pop("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{uri}: include: expected a path or a list of paths")
    merged: dict = {}
    for included in includes:
        merged = merge(merged, load_raw(_relative_to(uri, included), (*_seen, uri)))
    return merge(merged, data)


def _relative_to(uri: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{PurePosixPath(rest).parent / path}"
    return str(PurePosixPath(uri).parent / path)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; values are parsed as YAML (`3`, `true`, `[a, b]`)."""
    result = raw
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected dotted.key=value")
        dotted, text = override.split("=", 1)
        parts = dotted.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {override!r}: empty key segment in {dotted!r}")
        value = _parse_value(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        result = merge(result, nested)
    return result


def _parse_value(text: str) -> Any:
    """A --set value as YAML (numbers, booleans, lists); text YAML cannot parse stays a string."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load(uri: str, overrides: list[str] | None = None) -> Config:
    """Load, override, type-check and validate a config; raises ConfigError naming the key."""
    raw = expand_generator_preset(apply_overrides(load_raw(uri), overrides or []))
    config = from_dict(Config, raw)
    config.check()
    return config


def to_yaml(config: Config, header: str = "") -> str:
    body = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return f"{header}{body}"
