"""`unitvox diagnose training`: health over a finished or running training, with its evidence.

Run: unitvox diagnose training --config jobs/demo.yaml --run ./runs/demo

The verdict is the live monitor's (`diagnose_run`, the same signals over the saved log and a
checkpoint's parameter norms); around it: health over time, plots of every loss and signal, each
discriminator's AUC on held-out real versus generated audio, and the loss-balance table. A notebook
can call the pieces:

    from unitvox.diagnostics.training.training_diagnosis import diagnose_run
    from unitvox.store import open_store
    print(diagnose_run(open_store("./runs/exp1")).summary())
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from unitvox.config import Config, ConfigError, load
from unitvox.config.health import HealthConfig
from unitvox.diagnostics.training import probe, timeline
from unitvox.health.norms import checkpoint_parameter_norms
from unitvox.health.monitor import CRITICAL, HEALTHY, HealthReport, assess, write_report
from unitvox.health.progress import judge_progress
from unitvox.diagnostics.diagnosis import OK, PROBLEM, WARNING, Diagnosis, figure_link
from unitvox.health.signals import SIGNALS
from unitvox.report import markdown_table
from unitvox.errors import IncompleteError
from unitvox.layout import CONFIG, EVALUATE_METRICS, LATEST_CHECKPOINT as LATEST, TRAINING_LOG as LOG
from unitvox.store import Store
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.inference import existing_checkpoint


HELP = "health of a finished or running training: signals over time, discriminator AUC, loss balance"
EXAMPLES = """examples:
  unitvox diagnose training --config jobs/base.yaml --run RUN
  unitvox diagnose training --config jobs/base.yaml --run RUN --checkpoint best
  unitvox diagnose training --config jobs/base.yaml --run RUN --log-only          # no model loaded: fast

Writes RUN/diagnose/training/report.json, report.md, curves.png and status.png."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint to probe: latest, best, a key in the run or a URI "
                                             "(default: diagnose.training.checkpoint)")
    parser.add_argument("--log-only", action="store_true",
                        help="judge the log alone: no discriminator AUC or loss balance (no model is loaded)")


def from_arguments(config: Config, store: Store, args: argparse.Namespace) -> Diagnosis:
    return diagnose_training(config, store, checkpoint=args.checkpoint, probe_model=not args.log_only)


def diagnose_training(config: Config, store: Store, *, checkpoint: str | None = None,
                      probe_model: bool = True) -> Diagnosis:
    """Diagnose a run's training from its log and a checkpoint.

    Args:
        config: the run's config (loss weights, health thresholds, `diagnose.training`).
        store: the run's root.
        checkpoint: the checkpoint whose norms join the verdict and which is probed (default
            `diagnose.training.checkpoint`); a run without one is judged on its log alone.
        probe_model: load the checkpoint's models to measure discriminator AUC and loss balance.

    Raises:
        IncompleteError: the run has no training log yet.
    """
    settings = config.diagnose.training
    checkpoint = checkpoint or settings.checkpoint
    try:
        saved = saved_checkpoint(store, checkpoint)
    except IncompleteError as missing:
        saved, measured = None, {"skipped": str(missing)}
    report, log = _judge_log(store, config, config.train.health, saved)
    points = timeline.status_timeline(log, config.train.health, config.train.lambdas.weights(), settings.every_rows)
    if not probe_model:
        measured = {"skipped": "--log-only"}
    elif saved:
        measured = _probe(config, store, *saved)
    status, findings = _judge(report, points, measured, config)
    figures = {name: png for name, png in (("curves.png", timeline.curves_png(log)),
                                           ("status.png", timeline.status_png(points))) if png}
    details = {"health": report.to_dict(), "timeline": points, "log_rows": len(log), "checkpoint": checkpoint,
               **measured}
    return Diagnosis("training", status, _verdict(report, measured), findings, details,
                     _sections(report, points, measured, figures), figures)


def _probe(config: Config, store: Store, uri: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Discriminator AUC and loss balance from the checkpoint's models, or why they were not measured."""
    try:
        trainer = probe.load_trainer(config, store, uri, payload)
    except IncompleteError as missing:
        return {"skipped": str(missing)}
    settings = config.diagnose.training
    return {"probed_step": trainer.state.step,
            "discriminator_auc": [found.to_dict() for found in probe.discriminator_auc(trainer, settings.auc_items)],
            "loss_balance": probe.loss_balance(trainer, settings.balance_batches)}


def _judge(report: HealthReport, points: list[dict[str, Any]], measured: dict[str, Any],
           config: Config) -> tuple[str, list[str]]:
    """The status and the findings, most severe first."""
    dominance_auc, max_share = config.diagnose.training.dominance_auc, config.train.health.balance_max_share
    findings = [f"{name}: {report.signals[name].detail}" for name in report.reasons]
    if report.progress and report.progress.severity > HEALTHY:
        findings.append(report.progress.detail)
    changes = timeline.transitions(points)
    if len(changes) > 1:
        findings.append("health over time: " + "; ".join(changes))
    concerns = 0
    for found in measured.get("discriminator_auc", []):
        finding, dominates = _auc_finding(found, dominance_auc, config.train.health.dominance_score_gap)
        concerns += dominates
        findings.append(finding)
    for row in measured.get("loss_balance", []):
        if row["gradient_share"] is not None and row["gradient_share"] > max_share:
            concerns += 1
            findings.append(f"{row['term']} sends {row['gradient_share']:.0%} of the generator's gradient "
                            f"(with {row['loss_share']:.0%} of the weighted loss): check train.lambdas.{row['term']}")
    if "skipped" in measured:
        findings.append(f"no model probe: {measured['skipped']}")
    status = PROBLEM if report.status == CRITICAL else WARNING if report.status > HEALTHY or concerns else OK
    return status, findings


def _auc_finding(found: dict[str, Any], dominance_auc: float, score_gap: float) -> tuple[str, bool]:
    """A sentence on one discriminator's held-out AUC, and whether it dominates the generator.

    A high AUC alone is normal for a GAN in training: least squares keeps guiding the generator
    while the scores stay close. It dominates when it also scores the two sides far apart.
    """
    name, auc, items = found["discriminator"], found["auc"], found["items"]
    if auc is None:
        return f"{name}: no AUC (its scores were not finite)", False
    gap = found["real_mean_score"] - found["generated_mean_score"]
    coarse = f" (only {items} held-out items: a coarse figure)" if items < 10 else ""
    if auc >= dominance_auc and gap >= score_gap:
        return (f"{name} dominates: it tells held-out real from generated audio almost always (AUC {auc:.3f}) and "
                f"scores them far apart ({found['real_mean_score']:.2f} vs {found['generated_mean_score']:.2f})"
                f"{coarse}"), True
    if auc >= dominance_auc:
        return (f"{name} ranks held-out real above generated audio (AUC {auc:.3f}) but scores them close "
                f"({found['real_mean_score']:.2f} vs {found['generated_mean_score']:.2f}): it still guides the "
                f"generator{coarse}"), False
    return (f"{name} AUC on held-out audio {auc:.3f} (0.5: cannot tell real from generated; 1.0: always can)"
            f"{coarse}"), False


def _verdict(report: HealthReport, measured: dict[str, Any]) -> str:
    verdict = report.summary()
    aucs = [f"{found['discriminator']} {found['auc']:.2f}" for found in measured.get("discriminator_auc", [])
            if found["auc"] is not None]
    return verdict + (f"; held-out discriminator AUC {', '.join(aucs)}" if aucs else "")


def _sections(report: HealthReport, points: list[dict[str, Any]], measured: dict[str, Any],
              figures: dict[str, bytes]) -> list[str]:
    signals = [[name, report.signals[name].to_dict()["severity"], report.signals[name].value,
                report.signals[name].threshold, report.signals[name].detail] for name in SIGNALS]
    sections = ["\n".join(["## Health at step " + str(report.step), "",
                           *markdown_table(["signal", "status", "value", "threshold", "detail"], signals)])]
    if report.progress:
        sections.append(f"## Progress\n\n{report.progress.detail}")
    over_time = ["## Health over time", "", *(f"- {change}" for change in timeline.transitions(points))]
    if "status.png" in figures:
        over_time += ["", figure_link("status.png", "each health signal's status at each check")]
    sections.append("\n".join(over_time))
    if "curves.png" in figures:
        sections.append("## Losses and signals\n\n" + figure_link("curves.png", "every logged loss and signal"))
    if measured.get("discriminator_auc"):
        rows = [[found["discriminator"], found["auc"], found["real_mean_score"], found["generated_mean_score"],
                 found["items"]] for found in measured["discriminator_auc"]]
        sections.append("\n".join([
            f"## Discriminator AUC on held-out audio (checkpoint at step {measured['probed_step']})", "",
            *markdown_table(["discriminator", "AUC", "mean score real", "mean score generated", "items"], rows)]))
    if measured.get("loss_balance"):
        rows = [[row["term"], row["weight"], row["value"], row["loss_share"], row["gradient_norm"],
                 row["gradient_share"]] for row in measured["loss_balance"]]
        sections.append("\n".join([
            "## Loss balance", "", "Each weighted generator term's share of the total, and of the gradient "
            "norm it sends into the generator (measured one term at a time on training batches).", "",
            *markdown_table(["term", "weight", "value", "share of loss", "gradient norm", "share of gradient"], rows)]))
    return sections


def diagnose_run(store: Store, *, config: Config | None = None, health: HealthConfig | None = None,
                 checkpoint: str | None = LATEST, step: int | None = None, write: bool = False) -> HealthReport:
    """Judge a saved training run the way the monitor judges a live one.

    Args:
        store: the run's root.
        config: the run's config (default: the `config.yaml` the run saved), for the loss weights
            and, unless `health` is given, the thresholds.
        health: thresholds to judge with instead of the run's own `train.health`.
        checkpoint: `latest`, `best`, a key in the run or a URI (default: the latest) whose parameter
            norms (and any NaN in its weights) join the verdict; None, or a checkpoint not written
            yet, judges the log alone.
        step: judge the run as it was at this step (default: the last logged step).
        write: also write the report under train/health/ like a live check.

    Returns:
        The report: status, named reasons, every signal and the figures behind them.

    Raises:
        IncompleteError: the run has no training log and no checkpoint to read one from.
        ConfigError: no config was given and the run has none saved.
    """
    config = config or _saved_config(store)
    try:
        saved = saved_checkpoint(store, checkpoint) if checkpoint else None
    except IncompleteError:  # not written yet: judge the log alone
        saved = None
    report, _ = _judge_log(store, config, health or config.train.health, saved, step)
    if write:
        write_report(store, report)
    return report


def _judge_log(store: Store, config: Config, health: HealthConfig, saved: tuple[str, dict[str, Any]] | None,
               step: int | None = None) -> tuple[HealthReport, list[dict[str, Any]]]:
    """The monitor's verdict on the run's log (and the saved checkpoint's norms), and the log it judged.

    The log file runs ahead of latest.pt after a critical stop, so it is preferred to the checkpoint's copy.
    A saved run's verdict also says whether it had converged, with its evaluation beside the original's.
    """
    log = list(store.read_jsonl(LOG)) if store.exists(LOG) else []
    payload = saved[1] if saved else None
    if not log and payload:
        log = json.loads(payload["log"])
    if not log:
        raise IncompleteError(f"{store.url(LOG)}: no training log to diagnose; run train first")
    norms = checkpoint_parameter_norms(payload) if payload else {}
    report = assess(log, health, config.train.lambdas.weights(), step=step, parameter_norms=norms)
    evaluation = store.read_json(EVALUATE_METRICS) if store.exists(EVALUATE_METRICS) else None
    report.progress = judge_progress(log, health, evaluation, step=step)
    return report, log


def saved_checkpoint(store: Store, checkpoint: str) -> tuple[str, dict[str, Any]]:
    """(URI, payload) of `latest`, `best`, a key in the run or a URI.

    Raises:
        IncompleteError: the checkpoint has not been written yet.
    """
    source, key = existing_checkpoint(store, checkpoint)
    return source.url(key), ckpt.load(source, key)


def _saved_config(store: Store) -> Config:
    if not store.exists(CONFIG):
        raise ConfigError(f"{store.url('config.yaml')} does not exist: pass the run's config")
    return load(store.url(CONFIG))
