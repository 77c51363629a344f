"""Reference transcripts beside the audio: LibriSpeech chapter files and plain per-file texts."""

from unitvox.evaluation.transcripts import transcript_beside
from unitvox.store import LocalStore


def test_librispeech_chapter_files_and_plain_texts(tmp_path):
    (tmp_path / "84" / "121123").mkdir(parents=True)
    (tmp_path / "84" / "121123" / "84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n")
    (tmp_path / "lj").mkdir()
    (tmp_path / "lj" / "LJ001-0001.txt").write_text("Printing, in the only sense\nwith which we are concerned\n")
    store = LocalStore(str(tmp_path))
    assert transcript_beside(store, "84/121123/84-121123-0001.flac") == "BUT IN LESS THAN FIVE MINUTES"
    assert transcript_beside(store, "84/121123/84-121123-0009.flac") is None  # not in the chapter file
    assert transcript_beside(store, "lj/LJ001-0001.wav") == "Printing, in the only sense with which we are concerned"
    assert transcript_beside(store, "lj/LJ001-0002.wav") is None



def test_prepare_carries_the_transcript_of_whole_file_segments_into_the_manifest(tmp_path):
    from synth import speech_like, write
    from unitvox.config import load
    from unitvox.layout import MANIFEST
    from unitvox.stages import run_stage
    from unitvox.stages.evaluate import reference_transcripts

    chapter = tmp_path / "corpus" / "84" / "121123"
    chapter.mkdir(parents=True)
    write(chapter / "84-121123-0000.wav", speech_like(2.0, seed=1))
    write(chapter / "84-121123-0001.wav", speech_like(2.0, seed=2))
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    run = LocalStore(str(tmp_path / "run"))
    run_stage(load("jobs/demo.yaml", [f"prepare.input={tmp_path / 'corpus'}", "prepare.shards=1"]), run, "prepare")
    texts = {row["source"].rsplit("/", 1)[-1]: row.get("text") for row in run.read_jsonl(MANIFEST)}
    assert texts == {"84-121123-0000.wav": "GO DO YOU HEAR", "84-121123-0001.wav": None}
    assert list(reference_transcripts(run).values()) == ["GO DO YOU HEAR"]
