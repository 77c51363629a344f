"""OverlayStore: a store of its own plus read-only folders of another, as ablation variants use it.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/store/test_overlay.py -q
"""

import pytest

from unitvox.store import LocalStore, StoreError
from unitvox.store.overlay import OverlayStore


@pytest.fixture
def stores(tmp_path):
    root = LocalStore(str(tmp_path / "run"))
    root.write_text("prepare/audio/a.wav", "audio")
    root.write_text("tokenize/units.jsonl", "units")
    root.write_text("train/latest.pt", "the base run's")
    own = root.child("ablations/v")
    return root, own, OverlayStore(own, root, ("prepare", "tokenize"))


def test_shared_folders_are_read_from_the_root_and_everything_else_from_its_own(stores):
    root, own, overlay = stores
    assert overlay.read_text("tokenize/units.jsonl") == "units"
    assert overlay.size("prepare/audio/a.wav") == 5 and overlay.exists("prepare/audio/a.wav")
    assert not overlay.exists("train/latest.pt")
    with pytest.raises(FileNotFoundError):
        overlay.read_bytes("train/latest.pt")
    overlay.write_text("train/latest.pt", "mine")
    assert own.read_text("train/latest.pt") == "mine" and root.read_text("train/latest.pt") == "the base run's"
    assert overlay.uri == own.uri
    assert overlay.url("tokenize/units.jsonl") == root.url("tokenize/units.jsonl")
    assert overlay.url("train/latest.pt") == own.url("train/latest.pt")
    assert overlay.local_root is None  # keys live in two folders


def test_shared_folders_cannot_be_changed(stores, tmp_path):
    _, _, overlay = stores
    source = tmp_path / "file.txt"
    source.write_text("x")
    for change in (lambda: overlay.write_text("tokenize/units.jsonl", ""),
                   lambda: overlay.delete("prepare/audio/a.wav"),
                   lambda: overlay.upload_file(source, "tokenize/new.txt")):
        with pytest.raises(StoreError, match="read-only"):
            change()


def test_local_copies_hashes_and_downloads_come_from_where_the_key_lives(stores, tmp_path):
    root, _, overlay = stores
    overlay.write_text("evaluate/metrics.json", "{}")
    with overlay.local_copy("prepare/audio/a.wav") as path:
        assert path == root.local_root / "prepare/audio/a.wav"
    assert overlay.sha256("tokenize/units.jsonl") == root.sha256("tokenize/units.jsonl")
    overlay.download_file("evaluate/metrics.json", tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_text() == "{}"
    assert list(overlay.read_jsonl("evaluate/metrics.json")) == [{}]


def test_listing_merges_both_sides_without_the_roots_other_folders(stores):
    _, _, overlay = stores
    overlay.write_text("train/log.jsonl", "")
    assert list(overlay.list()) == ["prepare/audio/a.wav", "tokenize/units.jsonl", "train/log.jsonl"]
    assert list(overlay.list("prepare/")) == ["prepare/audio/a.wav"]
    assert list(overlay.list("t")) == ["tokenize/units.jsonl", "train/log.jsonl"]


def test_a_child_keeps_the_routing(stores):
    _, _, overlay = stores
    shared = overlay.child("tokenize")
    assert shared.read_text("units.jsonl") == "units"
    with pytest.raises(StoreError, match="read-only"):
        shared.write_text("units.jsonl", "")
    mine = overlay.child("train")
    mine.write_text("log.jsonl", "x")
    assert overlay.read_text("train/log.jsonl") == "x" and not mine.exists("latest.pt")
