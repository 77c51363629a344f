"""An ablation suite: a YAML file of named variants, each a few dotted keys changed from the base.

Check one: unitvox ablate --config jobs/base.yaml --suite jobs/ablations/speaker.yaml --run RUN --validate
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from unitvox.config import Config, ConfigError, apply_overrides, expand_generator_preset, from_dict
from unitvox.evaluation.registry import EVALUATION_METRICS
from unitvox.store import read_uri_text

_VARIANT_NAME = re.compile(r"^[a-z0-9]([a-z0-9_]{0,38}[a-z0-9])?$")
# What the comparison may judge, and which way is better; a log's `loss/*` terms are reported, not judged.
# Evaluation figures (`evaluate/<metric>`) take their direction and unit from the metric registry.
_EVALUATED = {f"evaluate/{name}": spec for name, spec in EVALUATION_METRICS.items()}
LOWER_IS_BETTER = ("validation/mel_best", "validation/mel_final", "loss/mel",
                   *(name for name, spec in _EVALUATED.items() if not spec.higher_is_better))
HIGHER_IS_BETTER = tuple(name for name, spec in _EVALUATED.items() if spec.higher_is_better)
# Decibels can sit near zero and change sign, so a share of the baseline means nothing: they differ in dB.
DECIBEL_METRICS = tuple(name for name, spec in _EVALUATED.items() if spec.decibels)
# The default judged metric: the first of these every finished variant was evaluated on (intelligibility,
# then naturalness), else the best validation mel error, which is always a column beside it.
DEFAULT_KEY_METRICS = ("evaluate/cer", "evaluate/wer", "evaluate/dnsmos_overall")
VALIDATION_MEL_BEST = "validation/mel_best"


@dataclass(frozen=True)
class ComparisonSettings:
    """How variants are compared: the suite's optional `compare:` section.

    Attributes:
        baseline: the variant every other one is compared with (empty: `baseline` if the suite has
            it, else its first variant).
        key_metric: the metric that decides whether a component matters, one of LOWER_IS_BETTER
            or HIGHER_IS_BETTER; empty (the default) takes the first of DEFAULT_KEY_METRICS that
            every finished variant has, else `validation/mel_best` (see `compare.choose_key_metric`).
        noise_threshold: a difference from the baseline's key metric smaller than this share of the
            baseline's value (0.05 = 5 %) counts as run-to-run noise, not an effect.
        noise_threshold_db: the same for a key metric in decibels (DECIBEL_METRICS), in dB.
        final_log_rows: how many of the last logged steps are averaged for a variant's final losses.
    """

    baseline: str = ""
    key_metric: str = ""
    noise_threshold: float = 0.05
    noise_threshold_db: float = 0.5
    final_log_rows: int = 5

    def check(self, where: str) -> None:
        judged = LOWER_IS_BETTER + HIGHER_IS_BETTER
        if self.key_metric and self.key_metric not in judged:
            raise ConfigError(f"{where}.key_metric: {self.key_metric!r} is not one of {list(judged)}")
        for name in ("noise_threshold", "noise_threshold_db"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{where}.{name}: must not be negative, got {getattr(self, name)}")
        if self.final_log_rows < 1:
            raise ConfigError(f"{where}.final_log_rows: must be at least 1, got {self.final_log_rows}")

    @property
    def lower_is_better(self) -> bool:
        return self.key_metric in LOWER_IS_BETTER

    @property
    def in_decibels(self) -> bool:
        return self.key_metric in DECIBEL_METRICS

    def describe_threshold(self) -> str:
        if self.in_decibels:
            return f"{self.noise_threshold_db:g} dB"
        return f"{self.noise_threshold:.0%} of the baseline"


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
    compare: ComparisonSettings = field(default_factory=ComparisonSettings)

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
        return dataclasses.replace(self, variants=tuple(v for v in self.variants if v in chosen))

    @property
    def baseline(self) -> str:
        """The name of the variant the others are compared with."""
        if self.compare.baseline:
            return self.compare.baseline
        return "baseline" if "baseline" in self.names() else self.variants[0].name


def parse_suite(text: str, uri: str) -> Suite:
    """Parse a suite: `name:`, optional `common:` changes, `variants:` mapping each variant name to
    its dotted-key changes, and optional `compare:` settings (see ComparisonSettings)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None
    if not isinstance(data, dict) or set(data) - {"name", "common", "variants", "compare"}:
        raise ConfigError(f"{uri}: expected the keys name, common, variants and compare, got "
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
    compare = _comparison_settings(data.get("compare") or {}, uri)
    if compare.baseline and compare.baseline not in [variant.name for variant in parsed]:
        raise ConfigError(f"{uri}: compare.baseline: no variant {compare.baseline!r}")
    return Suite(str(name), uri, text, tuple(parsed), dict(common), compare)


def _comparison_settings(raw: Any, uri: str) -> ComparisonSettings:
    try:
        settings = from_dict(ComparisonSettings, raw, "compare")
    except ConfigError as error:
        raise ConfigError(f"{uri}: {error}") from None
    settings.check(f"{uri}: compare")
    return settings


def load_suite(uri: str) -> Suite:
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
