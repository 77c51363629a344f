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

