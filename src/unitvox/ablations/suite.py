"""An ablation suite: a YAML file of named variants, each a few dotted keys changed from the base.

Check one: unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --validate
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from unitvox.config import Config, ConfigError, apply_overrides, expand_generator_preset, from_dict

_VARIANT_NAME = re.compile(r"^[a-z0-9]([a-z0-9_]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class Variant:
    """One arm of a suite: its name and the dotted keys it changes (`train.lambdas.adversarial: 0`)."""

    name: str
    changes: dict[str, Any]

    def overrides(self) -> list[str]:
        """The changes as `--set` strings, e.g. `train.batch_size=4`."""
        return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, value in self.changes.items()]


@dataclass(frozen=True)
class Suite:
    """Named variants; `common` changes apply to every variant first (e.g. switch speaker conditioning on)."""

    name: str
    uri: str
    text: str
    variants: tuple[Variant, ...]
    common: dict[str, Any] = field(default_factory=dict)

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ConfigError(f"{self.uri}: no variant {name!r}; the suite has {self.names()}")

    def names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def select(self, names: list[str] | None) -> Suite:
        """The suite cut to `names` (in the suite's order); None keeps every variant."""
        if not names:
            return self
        chosen = [self.variant(name) for name in names]
        return Suite(self.name, self.uri, self.text, tuple(v for v in self.variants if v in chosen), self.common)


def parse_suite(text: str, uri: str) -> Suite:
    """Parse a suite: `name:`, optional `common:` changes, and `variants:` mapping each variant
    name to its dotted-key changes."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None
    if not isinstance(data, dict) or set(data) - {"name", "common", "variants"}:
        raise ConfigError(f"{uri}: expected the keys name, common and variants, got "
                          f"{sorted(data) if isinstance(data, dict) else data!r}")
    common = data.get("common") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{uri}: common: expected a mapping of dotted keys to values")
    name = data.get("name") or uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{uri}: variants: expected a mapping of variant names to changed keys")
    parsed = []
    for variant_name, changes in variants.items():
        where = f"{uri}: variants.{variant_name}"
        if not isinstance(variant_name, str) or not _VARIANT_NAME.match(variant_name):
            raise ConfigError(f"{where}: a variant name is lowercase letters, digits and _ (at most 40)")
        if not isinstance(changes, dict):
            raise ConfigError(f"{where}: expected a mapping of dotted keys to values (or {{}} for none)")
        parsed.append(Variant(variant_name, dict(changes)))
    return Suite(str(name), uri, text, tuple(parsed), dict(common))


def load_suite(uri: str) -> Suite:
    from unitvox.store import read_uri_text

    try:
        return parse_suite(read_uri_text(uri), uri)
    except FileNotFoundError:
        raise ConfigError(f"ablation suite not found: {uri}") from None


def variant_config(base: Config, suite: Suite, variant: Variant) -> Config:
    """The base config with the suite's common changes and the variant's; a bad key is refused
    naming the suite and the variant."""
    changes = Variant(variant.name, {**suite.common, **variant.changes}).overrides()
    raw = apply_overrides(base.to_dict(), changes)
    try:
        config = from_dict(Config, expand_generator_preset(raw))
        config.check()
    except ConfigError as error:
        raise ConfigError(f"{suite.uri}: variant {variant.name}: {error}") from None
    return config


def check_suite(base: Config, suite: Suite) -> list[Config]:
    """Every variant's config, validated before anything runs."""
    return [variant_config(base, suite, variant) for variant in suite.variants]
