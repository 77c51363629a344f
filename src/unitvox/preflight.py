"""Refuse early: the packages, model folders and object store a config needs, checked before any work.

Check a config (and the run root it will write) without running anything:
    unitvox validate --config jobs/demo.yaml --run s3://bucket/runs/demo

`validate` checks what every stage and diagnosis needs, `unitvox pipeline` what its stages need,
and each stage what it needs itself, before it writes anything. Packages are looked up with
`importlib.util.find_spec`, so nothing heavy is imported; a plug-in declares what it imports as
`requires = (Requirement(module, install), ...)` (`unitvox.registry`), and this module asks the
plug-in the config chose.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from unitvox.config import Config
from unitvox.errors import ConfigError
from unitvox.layout import DIAGNOSE, EVALUATE, PREPARE, STAGE_NAMES, TOKENIZE, TRAIN
from unitvox.registry import Requirement, requirements
from unitvox.store import StoreError

EVERYTHING = (*STAGE_NAMES, DIAGNOSE)
"""What `unitvox validate` checks: every stage, and the diagnoses."""


class PreflightError(ConfigError):
    """What a config needs that this machine lacks; one line per config key."""


@dataclass(frozen=True)
class Need:
    """A package that the plug-in named by config `key` (set to `value`) imports when it runs."""

    key: str
    value: str
    requirement: Requirement
    alternatives: tuple[str, ...] = ()


def check(config: Config, stages: Iterable[str] = EVERYTHING, *, run: str | None = None) -> None:
    """Refuse `config` when `stages` need a package, model folder or bucket that is not at hand.

    Args:
        stages: stage names (and "diagnose") whose needs are checked.
        run: the run root; an `s3://` one has its endpoint and bucket probed first.

    Raises:
        PreflightError: (exit code 2) a package or model folder is missing, or the bucket is not there;
            the message names each key, what it needs and how to install it.
        StoreError: (exit code 1) the S3 endpoint did not answer in time; retrying later may help.
    """
    stages = tuple(stages)
    check_store(config, stages, run=run)
    check_installed(config, stages)


def check_installed(config: Config, stages: Iterable[str] = EVERYTHING) -> None:
    """`check` less the store: the packages and local model folders `stages` need; raises PreflightError."""
    stages = tuple(stages)
    problems = [*_package_problems(config, stages), *_model_folder_problems(config, stages)]
    if problems:
        raise PreflightError("the config needs what this machine lacks (nothing was run):\n  " + "\n  ".join(problems))


def check_store(config: Config, stages: Iterable[str] = EVERYTHING, *, run: str | None = None) -> None:
    """Probe the S3 buckets the run root and `prepare.input` name, once each, with a short timeout."""
    stages = tuple(stages)
    uris = {"--run": run} if run else {}
    if PREPARE in stages and config.prepare.input:
        uris["prepare.input"] = config.prepare.input
    seen: set[str] = set()
    for key, uri in uris.items():
        if not uri.startswith("s3://"):
            continue
        bucket = uri[len("s3://"):].split("/", 1)[0]
        if bucket in seen:
            continue
        seen.add(bucket)
        from unitvox.store.s3 import probe_bucket  # boto3 is imported only for s3:// runs

        try:
            probe_bucket(uri)
        except LookupError as refused:
            raise PreflightError(f"{key} {uri}: {refused} (nothing was run)") from None
        except ConnectionError as unreachable:
            raise StoreError(f"{key} {uri}: {unreachable}; check AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) "
                             "and the network (nothing was run)") from None


def is_missing(module: str) -> bool:
    """True when `module` cannot be imported; looked up without importing it."""
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # imported already, without a spec (a test's stand-in): it is there
        return False
    except ImportError:  # a parent package is missing, or an import hook refuses it
        return True


def needs(config: Config, stages: Iterable[str] = EVERYTHING) -> list[Need]:
    """The packages that the plug-ins `config` chooses for `stages` import."""
    stages = tuple(stages)
    found: list[Need] = []
    if TRAIN in stages and config.train.speaker.enabled:
        from unitvox.vocoder.speaker_encoder import SPEAKER_ENCODERS  # torch: only when speakers are on

        found += _plugin_needs("train.speaker.encoder", config.train.speaker.encoder, SPEAKER_ENCODERS)
    embedders = {}
    if EVALUATE in stages:
        embedders["evaluate.speaker_embedder"] = config.evaluate.speaker_embedder
    if DIAGNOSE in stages and config.diagnose.embeddings.embedder != "checkpoint":
        embedder = config.diagnose.embeddings.embedder
        embedders["diagnose.embeddings.embedder"] = config.evaluate.speaker_embedder if embedder == "evaluate" \
            else embedder
    for key, name in embedders.items():
        if name != "none":
            from unitvox.evaluation.speaker import SPEAKER_EMBEDDERS  # librosa: only when an embedder is chosen

            found += _plugin_needs(key, name, SPEAKER_EMBEDDERS)
    if EVALUATE in stages:
        found += _evaluation_needs(config)
    return found


def _evaluation_needs(config: Config) -> list[Need]:
    """The ASR engine's packages, and those of DNSMOS, PESQ and STOI when they are on."""
    from unitvox.evaluation.asr import ASR_ENGINES
    from unitvox.evaluation.scoring import ListenerSettings, choose_asr_engine

    evaluate = config.evaluate
    engine, _ = choose_asr_engine(ListenerSettings(asr_engine=evaluate.asr.engine, language=evaluate.asr.language))
    found = _plugin_needs("evaluate.asr.engine", engine, ASR_ENGINES) if engine else []
    if evaluate.dnsmos:
        found += [Need("evaluate.dnsmos", "true", Requirement(module, "pip install speechmos onnxruntime"))
                  for module in ("speechmos", "onnxruntime")]
    if evaluate.distortions:
        found += [Need("evaluate.distortions", "true", Requirement(module, "pip install pesq pystoi"))
                  for module in ("pesq", "pystoi")]
    return found


def _plugin_needs(key: str, name: str, table: dict) -> list[Need]:
    if name not in table:
        return []  # an unknown name is the config check's to refuse
    usable = tuple(sorted(other for other, implementation in table.items()
                          if not any(is_missing(r.module) for r in requirements(implementation))))
    return [Need(key, name, requirement, usable) for requirement in requirements(table[name])]


def _package_problems(config: Config, stages: tuple[str, ...]) -> list[str]:
    """One line per key whose plug-in lacks packages: the key, the packages and the install command."""
    missing: dict[tuple[str, str, str], list[str]] = {}
    alternatives: dict[str, tuple[str, ...]] = {}
    for need in needs(config, stages):
        if is_missing(need.requirement.module):
            missing.setdefault((need.key, need.value, need.requirement.install), []).append(need.requirement.module)
            alternatives[need.key] = need.alternatives
    lines = []
    for (key, value, install), modules in missing.items():
        packages = ", ".join(repr(module) for module in modules)
        line = (f"{key}: {value} needs the package{'s' if len(modules) > 1 else ''} {packages}, not installed; "
                f"install with: {install}")
        if alternatives[key]:
            line += f" (or set {key} to one of {list(alternatives[key])})"
        lines.append(line)
    return lines


def model_folders(config: Config, stages: Iterable[str] = EVERYTHING) -> dict[str, str]:
    """Config key -> the local model folder it names, for the models `stages` load."""
    stages = tuple(stages)
    folders = {}
    features = config.tokenize.features
    # evaluate's unit match tokenizes the resynthesis again with the run's extractor.
    if features.extractor == "ssl" and (TOKENIZE in stages or EVALUATE in stages and config.evaluate.unit_match):
        folders["tokenize.features.model"] = features.model
    asr = config.evaluate.asr
    if EVALUATE in stages and asr.engine == "transformers" and asr.model:
        folders["evaluate.asr.model"] = asr.model
    return {key: path for key, path in folders.items() if is_local_path(path)}


def is_local_path(model: str) -> bool:
    """Whether a `from_pretrained` name is a folder rather than a hub name (`owner/name`, one slash)."""
    return (model.startswith(("/", "./", "../", "~", "file://")) or model.count("/") > 1
            or Path(model).expanduser().is_dir())


def _model_folder_problems(config: Config, stages: tuple[str, ...]) -> list[str]:
    lines = []
    for key, model in model_folders(config, stages).items():
        folder = Path(model.removeprefix("file://")).expanduser()
        if not folder.is_dir():
            lines.append(f"{key}: the model folder {model} does not exist (give a folder written by "
                         "save_pretrained, or a hub name such as facebook/wav2vec2-large-xlsr-53)")
        elif not (folder / "config.json").is_file():
            lines.append(f"{key}: {model} has no config.json, so it is not a model folder written by save_pretrained")
    return lines


__all__ = ["EVERYTHING", "Need", "PreflightError", "check", "check_installed", "check_store", "is_local_path",
           "is_missing", "model_folders", "needs"]
