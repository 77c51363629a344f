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


def _two_speakers(run):
    rows = [json.loads(line) for line in (run / MANIFEST).read_text().splitlines()]
    speakers = sorted({row["speaker"] for row in rows})
    if len(speakers) < 2:
        pytest.skip("the corpus has one speaker")
    source = next(row for row in rows if row["speaker"] == speakers[0])
    target = next(row for row in rows if row["speaker"] == speakers[1])
    return run / source["audio"], run / target["audio"]


def test_resynthesize_with_a_speaker_moves_the_voice_towards_the_reference(conversion_run, tmp_path):
    from unitvox.evaluation import build_speaker_embedder, speaker_similarity

    source, reference = _two_speakers(conversion_run)
    out = tmp_path / "wavs"
    assert main(["resynthesize", "--model", str(conversion_run), str(source), "--out", str(out),
                 "--speaker", str(reference)]) == 0
    converted, rate = soundfile.read(out / f"{source.stem}.wav", dtype="float32")
    embedder = build_speaker_embedder("resemblyzer")
    source_wave, _ = soundfile.read(source, dtype="float32")
    reference_wave, _ = soundfile.read(reference, dtype="float32")
    to_reference = speaker_similarity(embedder, reference_wave, converted, rate)
    to_source = speaker_similarity(embedder, source_wave, converted, rate)
    assert np.isfinite([to_reference, to_source]).all()
    assert to_reference > to_source, f"similarity to the reference {to_reference:.3f}, to the source {to_source:.3f}"
