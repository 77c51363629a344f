"""Reference transcripts that corpora keep beside their audio, for ASR error rates against the truth.

    transcript_beside(store, "1688/1688-142285-0000.flac")   # "THERE'S IRON THEY SAY IN ALL OUR BLOOD ..."

Two conventions are read: LibriSpeech's `<speaker>-<chapter>.trans.txt` (lines `<utterance-id> <TEXT>`)
in the audio's folder, and a plain `<stem>.txt` (or `<stem>.lab`, as HTK and many TTS corpora keep)
beside the file. None when neither holds the utterance; never an error, since most corpora have none.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from unitvox.store import Store

PLAIN_SUFFIXES = (".txt", ".lab")


def transcript_beside(store: Store, key: str) -> str | None:
    """The transcript of the audio at `key` in `store`, or None when the corpus keeps none for it."""
    path = PurePosixPath(key)
    stem = path.stem
    chapter = stem.rpartition("-")[0]
    if chapter:
        listing = _trans_file(store, str(path.with_name(f"{chapter}.trans.txt")))
        if stem in listing:
            return listing[stem]
    for suffix in PLAIN_SUFFIXES:
        candidate = str(path.with_suffix(suffix))
        if candidate != key and store.exists(candidate):
            text = " ".join(store.read_text(candidate).split())
            return text or None
    return None


def _trans_file(store: Store, key: str) -> dict[str, str]:
    """utterance id -> text of a LibriSpeech chapter file; {} when there is none."""
    if not store.exists(key):
        return {}
    lines = (line.strip().split(maxsplit=1) for line in store.read_text(key).splitlines())
    return {parts[0]: parts[1] for parts in lines if len(parts) == 2}
