"""Training health of a saved run: the monitor's verdict from its training log and a checkpoint.

`unitvox diagnose training` calls `diagnose_run`; so can a notebook:

    from unitvox.diagnostics.training import diagnose_run
    from unitvox.store import open_store
    print(diagnose_run(open_store("./runs/exp1")).summary())
"""

from __future__ import annotations

import json
from typing import Any

from unitvox.config import Config, ConfigError, load
from unitvox.config.health import HealthConfig
from unitvox.diagnostics.figures import checkpoint_parameter_norms
from unitvox.diagnostics.health import HealthReport, assess, write_report
from unitvox.stages import IncompleteError
from unitvox.store import Store
from unitvox.vocoder import checkpoint as ckpt

LOG = "train/training_log.jsonl"
LATEST = f"{ckpt.CHECKPOINTS}/latest.pt"


def diagnose_run(store: Store, *, config: Config | None = None, health: HealthConfig | None = None,
                 checkpoint: str | None = LATEST, step: int | None = None, write: bool = False) -> HealthReport:
    """Judge a saved training run the way the monitor judges a live one.

    Args:
        store: the run's root.
        config: the run's config (default: the `config.yaml` the run saved), for the loss weights
            and, unless `health` is given, the thresholds.
        health: thresholds to judge with instead of the run's own `train.health`.
        checkpoint: a checkpoint key in the run (default: the latest) whose parameter norms (and
            any NaN in its weights) join the verdict; None judges the log alone.
        step: judge the run as it was at this step (default: the last logged step).
        write: also write the report under train/health/ like a live check.

    Returns:
        The report: status, named reasons, every signal and the figures behind them.

    Raises:
        IncompleteError: the run has no training log and no checkpoint to read one from.
        ConfigError: no config was given and the run has none saved.
    """
    config = config or _saved_config(store)
    log, norms = _log_and_norms(store, checkpoint)
    if not log:
        raise IncompleteError(f"{store.url(LOG)}: no training log to diagnose; run train first")
    report = assess(log, health or config.train.health, config.train.lambdas.weights(), step=step,
                    parameter_norms=norms)
    if write:
        write_report(store, report)
    return report


def _saved_config(store: Store) -> Config:
    if not store.exists("config.yaml"):
        raise ConfigError(f"{store.url('config.yaml')} does not exist: pass the run's config")
    return load(store.url("config.yaml"))


def _log_and_norms(store: Store, checkpoint: str | None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The training log (the file, else the checkpoint's copy) and the checkpoint's parameter norms."""
    log = list(store.read_jsonl(LOG)) if store.exists(LOG) else []
    if not checkpoint or not store.exists(checkpoint):
        return log, {}
    payload = ckpt.load(store, checkpoint)
    # The log file runs ahead of latest.pt after a critical stop; it is the longer record.
    return log or json.loads(payload["log"]), checkpoint_parameter_norms(payload)
