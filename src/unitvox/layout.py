"""Every key under a run root, spelt once.

A run root (`file://`, a plain path or `s3://bucket/prefix`) holds one folder per stage; each stage
writes its outputs first and `<stage>/_SUCCESS.json` last. Stages, diagnoses, ablations and tests
import these names instead of spelling paths.
"""

from __future__ import annotations

# The stages, in pipeline order; each writes under the folder of its name.
PREPARE, TOKENIZE, BPE, TRAIN, EVALUATE, SAMPLES = "prepare", "tokenize", "bpe", "train", "evaluate", "samples"
STAGE_NAMES = (PREPARE, TOKENIZE, BPE, TRAIN, EVALUATE, SAMPLES)

SUCCESS = "_SUCCESS.json"
CONFIG = "config.yaml"  # the resolved config of the run, at its root


def success(prefix: str) -> str:
    """The `_SUCCESS.json` record of a stage (or of any folder that keeps one)."""
    return f"{prefix}/{SUCCESS}"


# prepare
MANIFEST = f"{PREPARE}/manifest.jsonl"
REJECTED = f"{PREPARE}/rejected.jsonl"
PREPARE_REPORT = f"{PREPARE}/report.json"
PREPARE_AUDIO = f"{PREPARE}/audio"
PREPARE_RECORDS = f"{PREPARE}/records"

# tokenize
CODEBOOK = f"{TOKENIZE}/codebook"
CENTROIDS_FILE = "centroids.npy"
FINGERPRINT_FILE = "codebook.json"
CODEBOOK_CENTROIDS = f"{CODEBOOK}/{CENTROIDS_FILE}"
CODEBOOK_FINGERPRINT = f"{CODEBOOK}/{FINGERPRINT_FILE}"
TOKENIZE_SAMPLE = f"{TOKENIZE}/sample"  # <sample id>/<shard>.npz, features.json, cache/<segment>.npy
SAMPLE_FEATURES_FILE = "features.json"  # the extractor's fingerprint, beside the sample shards
SAMPLE_CACHE_DIR = "cache"  # the sampled segments' whole features, kept for assign (costly extractors only)
TOKENIZE_PARTS = f"{TOKENIZE}/parts"
UNITS = f"{TOKENIZE}/units.jsonl"
TOKENIZE_REPORT = f"{TOKENIZE}/report.json"

# bpe
BPE_MODEL = f"{BPE}/bpe.model"
BPE_VOCAB = f"{BPE}/bpe.vocab"
BPE_MOTIFS = f"{BPE}/motifs.json"

# train
SPLIT = f"{TRAIN}/split.json"
TRAINING_LOG = f"{TRAIN}/training_log.jsonl"
CHECKPOINTS = f"{TRAIN}/checkpoints"
LATEST_CHECKPOINT = f"{CHECKPOINTS}/latest.pt"
BEST_CHECKPOINT = f"{CHECKPOINTS}/best.pt"
CHECKPOINTS_ARCHIVE = f"{TRAIN}/checkpoints.old"  # checkpoint lines a fresh start set aside, one folder each
TRAIN_SAMPLES = f"{TRAIN}/samples"
HEALTH = f"{TRAIN}/health"
HEALTH_LATEST = f"{HEALTH}/latest.json"


def step_checkpoint(step: int) -> str:
    return f"{CHECKPOINTS}/step_{step:08d}.pt"


def archived_checkpoints(stamp: str) -> str:
    """The folder a fresh start moves the previous checkpoints (and their training log) to; `stamp` is UTC time."""
    return f"{CHECKPOINTS_ARCHIVE}/{stamp}"


def critical_checkpoint(step: int) -> str:
    """The state a critical health verdict was reached in, kept as evidence."""
    return f"{CHECKPOINTS}/critical_step_{step:08d}.pt"


# evaluate
EVALUATE_PARTS = f"{EVALUATE}/parts"
EVALUATE_METRICS = f"{EVALUATE}/metrics.json"
EVALUATE_SUMMARY = f"{EVALUATE}/summary.md"
EVALUATE_JUNIT = f"{EVALUATE}/junit.xml"
EVALUATE_REPORT = f"{EVALUATE}/report.html"  # the page to look at and listen to; its audio beside it
EVALUATE_AUDIO = f"{EVALUATE}/audio"          # <segment>.original.wav, <segment>.resynthesis.wav, <segment>.mel.png


def evaluate_audio(segment_id: str, kind: str) -> str:
    """One held-out segment's file for the report: kind is original.wav, resynthesis.wav or mel.png."""
    return f"{EVALUATE_AUDIO}/{segment_id}.{kind}"

# diagnose: one folder per kind, each with report.json, report.md and its plots
DIAGNOSE = "diagnose"
DIAGNOSE_INDEX = f"{DIAGNOSE}/report.md"
DIAGNOSE_DATA_FILES = f"{DIAGNOSE}/data/files.jsonl"
DIAGNOSE_DATA_FILTER = f"{DIAGNOSE}/data/filter.txt"
DIAGNOSE_REMAPPED = f"{DIAGNOSE}/checkpoint/remapped.pt"


def diagnosis_folder(kind: str) -> str:
    return f"{DIAGNOSE}/{kind}"


# ablate: the suite at the top, one run root per variant below it
ABLATIONS = "ablations"
ABLATION_CONFIG = f"{ABLATIONS}/{CONFIG}"
ABLATION_SUITE = f"{ABLATIONS}/suite.yaml"
ABLATION_COMPARISON = f"{ABLATIONS}/comparison.json"
ABLATION_REPORT = f"{ABLATIONS}/report.md"
ABLATION_CURVES = f"{ABLATIONS}/curves.png"


def ablation_variant(name: str) -> str:
    """The run root of one ablation variant (its own train/ and evaluate/)."""
    return f"{ABLATIONS}/{name}"
