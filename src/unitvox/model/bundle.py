"""A trained model as a self-contained folder: weights, codebook, feature setup, fingerprints and a model card.

Made by `unitvox export --run RUN --out model/`; read by `UnitModel.from_pretrained("model/")`.
Files (names spelt here once):
    model.json                    format, sample rate, feature extractor, codebook fingerprint, the vocoder's
                                  model description (as its checkpoint carried it), versions, and `files`:
                                  the sha256 of every other file
    generator.safetensors         generator weights (speaker_encoder.safetensors with speaker conditioning,
                                  duration_predictor.safetensors for a deduplicated-units vocoder)
    codebook.npy                  K-Means centroids (k, dim) float32
    bpe.model                     the run's SentencePiece motif model, when it has one
    MODEL_CARD.md                 training data and evaluation summaries of the run
Nothing is pickled. Reading checks the file hashes first (a removed or altered file is named), then
every fingerprint (a codebook of another run, another k or another extractor setup is named).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitvox.config import Config, ConfigError, load as load_config
from unitvox.layout import BPE_MODEL, CODEBOOK, CONFIG, EVALUATE_METRICS, PREPARE_REPORT
from unitvox.store import Store
from unitvox.units.kmeans import Codebook, centroids_hash, unit_count
from unitvox.vocoder import checkpoint as ckpt

FORMAT = "unitvox-model/1"
MODEL_JSON = "model.json"
GENERATOR_FILE = "generator.safetensors"
SPEAKER_ENCODER_FILE = "speaker_encoder.safetensors"
DURATION_PREDICTOR_FILE = "duration_predictor.safetensors"
CODEBOOK_FILE = "codebook.npy"
BPE_FILE = "bpe.model"
MODEL_CARD_FILE = "MODEL_CARD.md"
UNIT_FORMS = ("frames", "deduplicated")  # what the vocoder was trained on; `deduplicated` has a duration predictor
# The feature settings that decide which units come out; each must agree with the codebook's fingerprint.
FEATURE_IDENTITY = ("extractor", "model", "layer", "n_mfcc", "n_mels", "window_seconds", "normalize")


class BundleError(ConfigError):
    """A bundle that is incomplete, altered or inconsistent; the message names the file or the fields."""


@dataclass
class Bundle:
    """A bundle in memory: `description` is model.json less its file list; weights are CPU tensors."""

    description: dict[str, Any]
    centroids: np.ndarray
    generator: dict[str, Any]
    speaker_encoder: dict[str, Any] | None
    bpe_model: bytes | None
    card: str
    where: str
    duration_predictor: dict[str, Any] | None = None

    @property
    def units(self) -> str:
        """`frames` or `deduplicated` (run units, with a duration predictor)."""
        return self.description.get("units", "frames")

    @property
    def codebook(self) -> Codebook:
        return Codebook(self.centroids, self.description["codebook"])


def is_bundle(store: Store) -> bool:
    return store.exists(MODEL_JSON)


# ---------------------------------------------------------------------------------------------
# From a run


def from_run(store: Store, checkpoint: str = "best", config: Config | None = None) -> Bundle:
    """The bundle of a run: its config (the run's own config.yaml unless given), codebook and checkpoint.

    Raises:
        IncompleteError: the run has no checkpoint yet.
        CheckpointMismatch, CodebookMismatch: the checkpoint or codebook do not fit the run's config.
    """
    from unitvox.vocoder.inference import existing_checkpoint  # torch: loaded only when a model is

    if config is None:
        if not store.exists(CONFIG):
            raise BundleError(f"{store.url(CONFIG)} does not exist: not a run root (nor a bundle: no {MODEL_JSON})")
        config = load_config(store.url(CONFIG))
    codebook = Codebook.load(store, CODEBOOK)
    source, key = existing_checkpoint(store, checkpoint)
    payload = ckpt.load(source, key)
    ckpt.check_matches(payload["model"], ckpt.describe_model(config, codebook.fingerprint), source.url(key))
    description = {
        "format": FORMAT,
        "sample_rate": config.prepare.sample_rate,
        "units": ckpt.unit_form(payload["model"]),
        "features": dataclasses.asdict(config.tokenize.features),
        "levels": {"checks": dataclasses.asdict(config.prepare.checks), "split": dataclasses.asdict(config.prepare.split)},
        "codebook": codebook.fingerprint,
        "vocoder": payload["model"],
        "checkpoint": {"uri": source.url(key), "sha256": source.sha256(key), "step": int(payload["counters"]["step"])},
        "run": store.uri,
        "versions": _versions(),
    }
    has_bpe = store.exists(BPE_MODEL)
    if has_bpe:  # whether its pieces spell run units (to be given durations) or frames
        description["bpe"] = {"deduplicated": bool(config.bpe.deduplicate)}
    return Bundle(description, codebook.centroids, payload["generator"], payload.get("speaker_encoder"),
                  store.read_bytes(BPE_MODEL) if has_bpe else None, model_card(store, description),
                  store.uri, payload.get("duration_predictor"))


def _versions() -> dict[str, str]:
    import torch

    # the installed distribution's version: importing unitvox.__version__ here would close an import cycle
    return {"unitvox": importlib.metadata.version("unitvox"), "torch": torch.__version__,
            "python": platform.python_version()}


def model_card(store: Store, description: dict[str, Any]) -> str:
    """A short Markdown card: what the model is, the data it was trained on, how it scored."""
    codebook, generator = description["codebook"], description["vocoder"]["generator"]
    speaker = description["vocoder"].get("speaker")
    lines = [
        "# unitvox unit vocoder", "",
        f"- run: {description['run']}",
        f"- checkpoint: {description['checkpoint']['uri']} (step {description['checkpoint']['step']})",
        f"- units: k={codebook['k']} from {_extractor_name(codebook)}, one every {codebook['hop_seconds']} s "
        f"at {description['sample_rate']} Hz (codebook {codebook['hash'][:12]})",
        f"- generator: {generator.get('size')} ({generator.get('hop_samples')} samples per unit)",
        f"- voice conversion: {'yes, ' + speaker['encoder'] + ' speaker encoder' if speaker else 'no'}",
        f"- unit form: {description.get('units', 'frames')}"
        + (" (run units; durations given or from the duration predictor)" if description.get("units") == "deduplicated"
           else ""), "",
        "## Training data", "",
    ]
    lines += _scalars(store.read_json(PREPARE_REPORT)) if store.exists(PREPARE_REPORT) else ["(no prepare report)"]
    lines += ["", "## Evaluation", ""]
    lines += _scalars(store.read_json(EVALUATE_METRICS)) if store.exists(EVALUATE_METRICS) else [
        "(not evaluated: run `unitvox evaluate` before exporting to have figures here)"]
    return "\n".join(lines) + "\n"


def _extractor_name(codebook: dict[str, Any]) -> str:
    if codebook.get("extractor") == "ssl":
        return f"{codebook.get('model')} layer {codebook.get('layer')}"
    return str(codebook.get("extractor"))


def _scalars(report: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """`- key: value` for the numbers and words of a report, one level of nesting deep."""
    lines = []
    for name, value in report.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            lines.append(f"- {prefix}{name}: {round(value, 4) if isinstance(value, float) else value}")
        elif isinstance(value, dict) and depth == 0:
            lines += _scalars(value, f"{prefix}{name}.", depth + 1)
    return lines


# ---------------------------------------------------------------------------------------------
# Writing and reading


def write(bundle: Bundle, out: Store) -> list[str]:
    """Write the bundle's files under `out`, model.json (with every other file's sha256) last."""
    from safetensors.torch import save as save_tensors  # torch: loaded only when a model is

    metadata = {"format": FORMAT, "codebook": bundle.description["codebook"]["hash"]}
    files = {GENERATOR_FILE: save_tensors(_contiguous(bundle.generator), metadata),
             CODEBOOK_FILE: _npy(bundle.centroids), MODEL_CARD_FILE: bundle.card.encode()}
    if bundle.speaker_encoder is not None:
        files[SPEAKER_ENCODER_FILE] = save_tensors(_contiguous(bundle.speaker_encoder), metadata)
    if bundle.duration_predictor is not None:
        files[DURATION_PREDICTOR_FILE] = save_tensors(_contiguous(bundle.duration_predictor), metadata)
    if bundle.bpe_model is not None:
        files[BPE_FILE] = bundle.bpe_model
    for name, data in files.items():
        out.write_bytes(name, data)
    manifest = {name: out.sha256(name) for name in sorted(files)}
    out.write_text(MODEL_JSON, json.dumps({**bundle.description, "files": manifest}, indent=2, sort_keys=True) + "\n")
    return [*sorted(files), MODEL_JSON]


def _contiguous(weights: dict[str, Any]) -> dict[str, Any]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read(store: Store) -> Bundle:
    """A bundle from its folder, after checking its files and fingerprints.

    Raises:
        BundleError: a file missing or altered (named), or fingerprints that disagree (fields named).
    """
    from safetensors.torch import load as load_tensors  # torch: loaded only when a model is

    where = store.uri
    if not store.exists(MODEL_JSON):
        raise BundleError(f"{where}: no {MODEL_JSON}; not a unitvox model bundle (make one with unitvox export)")
    meta = store.read_json(MODEL_JSON)
    if meta.get("format") != FORMAT:
        raise BundleError(f"{store.url(MODEL_JSON)}: format {meta.get('format')!r}, this unitvox reads {FORMAT!r}")
    files = meta.pop("files", {})
    _check_files(store, files)
    centroids = np.load(io.BytesIO(store.read_bytes(CODEBOOK_FILE)), allow_pickle=False)
    weights = {name: store.read_bytes(name) for name in (GENERATOR_FILE, SPEAKER_ENCODER_FILE, DURATION_PREDICTOR_FILE)
               if name in files}
    check_fingerprints(meta, centroids, {name: _metadata(data) for name, data in weights.items()}, where)
    generator = load_tensors(weights[GENERATOR_FILE])
    encoder = load_tensors(weights[SPEAKER_ENCODER_FILE]) if SPEAKER_ENCODER_FILE in weights else None
    if meta["vocoder"].get("speaker") and encoder is None:
        raise BundleError(f"{where}: the vocoder is speaker-conditioned but {SPEAKER_ENCODER_FILE} is not listed")
    predictor = load_tensors(weights[DURATION_PREDICTOR_FILE]) if DURATION_PREDICTOR_FILE in weights else None
    if meta.get("units") == "deduplicated" and predictor is None:
        raise BundleError(f"{where}: the vocoder takes deduplicated units but {DURATION_PREDICTOR_FILE} is not listed")
    return Bundle(meta, centroids, generator, encoder, store.read_bytes(BPE_FILE) if BPE_FILE in files else None,
                  store.read_text(MODEL_CARD_FILE) if MODEL_CARD_FILE in files else "", where, predictor)


def _check_files(store: Store, files: dict[str, str]) -> None:
    for required in (GENERATOR_FILE, CODEBOOK_FILE):
        if required not in files:
            raise BundleError(f"{store.url(MODEL_JSON)}: its file list does not name {required}")
    for name, expected in sorted(files.items()):
        if not store.exists(name):
            raise BundleError(f"{store.url(name)} is missing: model.json lists it; export the bundle again")
        found = store.sha256(name)
        if found != expected:
            raise BundleError(f"{store.url(name)} has been altered: sha256 {found[:16]}..., model.json lists "
                              f"{expected[:16]}...; export the bundle again")


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` header of safetensors bytes, read without loading the tensors."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})


def check_fingerprints(meta: dict[str, Any], centroids: np.ndarray, weights_metadata: dict[str, dict[str, str]],
                       where: str) -> None:
    """Refuse a bundle whose codebook, features, vocoder and weights were not made together, naming each field."""
    codebook, vocoder = meta["codebook"], meta["vocoder"]
    found = []
    if centroids_hash(centroids) != codebook.get("hash"):
        found.append(f"codebook.hash: {CODEBOOK_FILE} hashes to {centroids_hash(centroids)[:16]}..., "
                     f"model.json codebook says {str(codebook.get('hash'))[:16]}...")
    dim = codebook.get("dim", centroids.shape[-1])
    if centroids.ndim != 2 or centroids.shape[0] != codebook.get("k") or centroids.shape[1] != dim:
        found.append(f"codebook.k: {CODEBOOK_FILE} has shape {tuple(centroids.shape)}, model.json codebook says "
                     f"k={codebook.get('k')}, dim={codebook.get('dim')}")
    expected = {"num_units": unit_count(codebook), "codebook": {key: codebook.get(key) for key in ckpt.CODEBOOK_KEYS}}
    found += [text.replace(": checkpoint ", ": vocoder ").replace(", expected ", ", codebook ")
              for text in ckpt.differences({key: vocoder.get(key) for key in expected}, expected)]
    features = meta["features"]
    found += [f"features.{name}: extractor {features.get(name)!r}, codebook {codebook[name]!r}"
              for name in FEATURE_IDENTITY if name in codebook and features.get(name) != codebook[name]]
    if meta.get("sample_rate") != codebook.get("sample_rate"):
        found.append(f"sample_rate: model {meta.get('sample_rate')!r}, codebook {codebook.get('sample_rate')!r}")
    for name, metadata in sorted(weights_metadata.items()):
        if metadata.get("codebook") != codebook.get("hash"):
            found.append(f"{name}: exported with codebook {str(metadata.get('codebook'))[:16]}..., model.json "
                         f"codebook is {str(codebook.get('hash'))[:16]}...")
    if meta.get("units") not in UNIT_FORMS:
        found.append(f"units: {meta.get('units')!r}, this unitvox vocodes {UNIT_FORMS}")
    elif meta.get("units") != ckpt.unit_form(vocoder):
        found.append(f"units: model {meta.get('units')!r}, vocoder {ckpt.unit_form(vocoder)!r}")
    if found:
        raise BundleError(f"{where}: the bundle's parts were not made together:\n  " + "\n  ".join(found))
