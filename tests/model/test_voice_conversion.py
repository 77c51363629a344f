"""Voice conversion through `resynthesize --speaker`: the output's voice moves towards the reference.

Needs a vocoder trained beyond a few steps, so it trains one (mel and contrastive losses only) and
is marked e2e. Similarities come from the evaluation's own speaker embedder (resemblyzer).
"""

import json
import shutil

import numpy as np
import pytest
import soundfile

from unitvox.cli import main
from unitvox.layout import MANIFEST

pytest.importorskip("resemblyzer", reason="voice conversion is measured with resemblyzer")

pytestmark = pytest.mark.e2e

# Warm-up over every step: mel + contrastive, no discriminators, ~10x cheaper a step on a CPU.
LONGER = ["train.max_steps=300", "train.generator_warmup_steps=300", "train.segment_seconds=0.5",
          "train.batch_size=8", "train.checkpoint_every=300"]


@pytest.fixture(scope="module")
def conversion_run(tokenized_run, tmp_path_factory, tiny_config):
    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    root = tmp_path_factory.mktemp("conversion") / "run"
    shutil.copytree(tokenized_run, root)
    run_stage(tiny_config(*LONGER), LocalStore(str(root)), "train")
    return root


def _pairs(run):
    """(source, reference) prepared segments: each speaker's first segment towards the next speaker's."""
    rows = [json.loads(line) for line in (run / MANIFEST).read_text().splitlines()]
    first = {}
    for row in rows:
        first.setdefault(row["speaker"], run / row["audio"])
    speakers = sorted(first)
    if len(speakers) < 2:
        pytest.skip("the corpus has one speaker")
    return [(first[a], first[b]) for a, b in zip(speakers, speakers[1:] + speakers[:1])]


def _read(path):
    return soundfile.read(path, dtype="float32")[0]


def _converted(run, source, reference, folder):
    assert main(["resynthesize", "--model", str(run), str(source), "--out", str(folder),
                 "--speaker", str(reference)]) == 0
    return _read(folder / f"{source.stem}.wav")


@pytest.mark.xfail(strict=False, reason="a 300-step CPU vocoder moves the voice towards the reference on "
                   "librispeech-mini but not on every corpus (the synthetic espeak voices: not yet); issue 16")
def test_resynthesize_with_a_speaker_moves_the_voice_towards_the_reference(conversion_run, tmp_path):
    """Converted speech is nearer the reference voice than the same content resynthesised in its own voice."""
    from unitvox.evaluation import build_speaker_embedder, speaker_similarity

    embedder = build_speaker_embedder("resemblyzer")
    shifts = []
    for index, (source, reference) in enumerate(_pairs(conversion_run)):
        converted = _converted(conversion_run, source, reference, tmp_path / f"to_{index}")
        own = _converted(conversion_run, source, source, tmp_path / f"own_{index}")
        target = _read(reference)
        shifts.append(speaker_similarity(embedder, target, converted, 16000)
                      - speaker_similarity(embedder, target, own, 16000))
    assert np.isfinite(shifts).all() and np.mean(shifts) > 0, shifts


@pytest.mark.xfail(strict=False, reason="a 300-step CPU vocoder barely carries the reference voice yet: on "
                   "librispeech-mini 14 of 30 speaker pairs sound nearer the reference than the source")
def test_converted_speech_is_nearer_the_reference_than_the_source(conversion_run, tmp_path):
    from unitvox.evaluation import build_speaker_embedder, speaker_similarity

    embedder = build_speaker_embedder("resemblyzer")
    source, reference = _pairs(conversion_run)[0]
    converted = _converted(conversion_run, source, reference, tmp_path / "wavs")
    to_reference = speaker_similarity(embedder, _read(reference), converted, 16000)
    to_source = speaker_similarity(embedder, _read(source), converted, 16000)
    assert to_reference > to_source, f"similarity to the reference {to_reference:.3f}, to the source {to_source:.3f}"
