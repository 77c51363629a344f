"""An ablation plan: the base config, the suite, the variants chosen, and every variant's checked config.

Run: unitvox ablate --config jobs/demo.yaml --suite jobs/ablations/speaker.yaml --run RUN --validate
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from unitvox.ablations.suite import Suite, check_suite
from unitvox.config import Config, ConfigError

# What each variant runs for itself, in order; evaluate only where the base pipeline has it.
VARIANT_STAGES = ("train", "evaluate")


@dataclass(frozen=True)
class Plan:
    """A checked ablation: the base config, the whole suite, the variants chosen to run, and every
    variant's config (all of them, so a bad variant is refused even when `--only` leaves it out)."""

    base: Config
    suite: Suite
    selected: tuple[str, ...]
    configs: dict[str, Config]

    @property
    def upstream(self) -> list[str]:
        """The stages the variants share: those before train in the base pipeline."""
        return upstream_stages(self.base)

    def variant_stages(self) -> list[str]:
        return [stage for stage in VARIANT_STAGES if stage == "train" or stage in self.base.pipeline.stages]

    def describe(self) -> list[str]:
        """A line per selected variant: its name and what it changes."""
        return [f"  {name}: {', '.join(self.suite.variant(name).overrides()) or 'as the base'}"
                for name in self.selected]


def upstream_stages(config: Config) -> list[str]:
    stages = list(config.pipeline.stages)
    return stages[: stages.index("train")] if "train" in stages else stages


def plan_ablation(base: Config, suite: Suite, only: list[str] | None = None) -> Plan:
    """Check the suite against the base config before anything runs.

    Raises:
        ConfigError: naming the suite file and variant, when `only` names a variant the suite does
            not have, a variant sets a key the config does not have or a value it refuses, or a
            variant changes a stage the variants share (their data would not be the base run's).
    """
    selected = suite.select(only)
    configs = {}
    for variant, config in zip(suite.variants, check_suite(base, suite)):
        for stage in upstream_stages(base):
            if config.stage_hash(stage) != base.stage_hash(stage):
                raise ConfigError(
                    f"{suite.uri}: variant {variant.name}: changes {stage}.*, but every variant reads the base "
                    f"run's {stage}/; ablate {stage} with separate runs instead")
        # The variant label keeps each variant's Prometheus series apart; it changes no stage hash.
        metrics = dataclasses.replace(config.metrics, variant=variant.name)
        configs[variant.name] = dataclasses.replace(config, metrics=metrics)
    return Plan(base, suite, tuple(selected.names()), configs)
