"""The store backends: one set of behaviour tests run against a local folder and against S3.

Run: .venv/bin/pytest tests/test_store.py -q

S3 is a moto server over real HTTP (fixtures in conftest.py). The S3 stores use 5 MiB parts, S3's
minimum, so an 11 MiB file already takes a three-part multipart transfer.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from unitvox.store import LocalStore, Store, StoreError, open_store
from unitvox.store.s3 import MINIMUM_PART_SIZE, S3Store

PART_SIZE = MINIMUM_PART_SIZE
LARGE_FILE_BYTES = 2 * PART_SIZE + 1024 * 1024


@pytest.fixture(params=["local-path", "local-file-uri", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each backend, rooted below the top of its folder or bucket."""
    if request.param == "local-path":
        return LocalStore(str(tmp_path / "store"))
    if request.param == "local-file-uri":
        return LocalStore(f"file://{tmp_path}/store")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(f"s3://{bucket}/store", part_size=PART_SIZE)


@pytest.fixture(scope="module")
def large_payload() -> bytes:
    """Random bytes spanning three parts, so a multipart transfer that drops or reorders one fails."""
    return os.urandom(LARGE_FILE_BYTES)


def _files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# Behaviour shared by every backend ---------------------------------------------------------------


def test_write_then_read_returns_the_same_bytes_and_text(store: Store):
    payload = bytes(range(256)) * 3
    store.write_bytes("runs/one/blob.bin", payload)
    store.write_text("notes.txt", "unités: ½ ✓")
    assert store.read_bytes("runs/one/blob.bin") == payload
    assert store.read_text("notes.txt") == "unités: ½ ✓"


def test_overwrite_replaces_the_whole_object_and_leaves_nothing_else(store: Store):
    store.write_bytes("state.json", b"x" * 10_000)
    store.write_bytes("state.json", b"short")
    assert store.read_bytes("state.json") == b"short"
    assert list(store.list()) == ["state.json"]
    if store.local_root is not None:
        assert _files_in(store.local_root) == ["state.json"]  # no temporary file left behind


def test_reading_a_missing_key_raises_file_not_found_naming_its_uri(store: Store):
    with pytest.raises(FileNotFoundError, match=re.escape(store.url("no/such/key.bin"))):
        store.read_bytes("no/such/key.bin")
    assert store.url("no/such/key.bin").startswith(store.uri)


def test_size_and_exists(store: Store):
    store.write_bytes("data.bin", b"12345")
    store.write_bytes("empty.bin", b"")
    assert store.size("data.bin") == 5
    assert store.size("empty.bin") == 0
    assert store.exists("empty.bin")
    assert store.size("missing.bin") is None
    assert not store.exists("missing.bin")


def test_list_returns_sorted_keys_relative_to_the_root(store: Store):
    keys = ["b/2.txt", "a/2.txt", "c.txt", "a/10.txt", "ab.txt", "a/1.txt", "a/deep/er/x.txt"]
    for key in keys:
        store.write_bytes(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/1.txt", "a/10.txt", "a/2.txt", "a/deep/er/x.txt"]
    assert list(store.list("a")) == ["a/1.txt", "a/10.txt", "a/2.txt", "a/deep/er/x.txt", "ab.txt"]
    assert list(store.list("a/deep/")) == ["a/deep/er/x.txt"]
    assert list(store.list("zzz/")) == []


def test_list_of_an_empty_store_is_empty(store: Store):
    assert list(store.list()) == []


def test_delete_removes_the_object_and_ignores_missing_keys(store: Store):
    store.write_bytes("keep.txt", b"k")
    store.write_bytes("drop.txt", b"d")
    store.delete("drop.txt")
    store.delete("never-existed.txt")
    assert not store.exists("drop.txt")
    assert list(store.list()) == ["keep.txt"]


def test_child_store_is_rooted_below_its_parent(store: Store):
    child = store.child("/runs/one/")
    assert child.uri == store.url("runs/one")
    assert type(child) is type(store)
    child.write_bytes("metrics.json", b"{}")
    child.child("sub").write_bytes("deep.txt", b"deep")
    store.write_bytes("runs/two/other.txt", b"other")
    assert store.read_bytes("runs/one/metrics.json") == b"{}"
    assert list(child.list()) == ["metrics.json", "sub/deep.txt"]
    assert child.url("metrics.json") == store.url("runs/one/metrics.json")


def test_keys_that_escape_the_store_are_refused(store: Store):
    for key in ("../outside.txt", "/absolute.txt", "a/../../outside.txt"):
        with pytest.raises(ValueError, match="store key"):
            store.write_bytes(key, b"x")


def test_json_and_jsonl_helpers_round_trip(store: Store):
    value = {"name": "unitvox", "units": [1, 2, 3], "nested": {"ok": True, "ratio": 0.5}}
    rows = [{"id": index, "text": f"row {index}", "tags": ["a"] * index} for index in range(50)]
    store.write_json("config.json", value)
    store.write_jsonl("rows/part-0.jsonl", iter(rows))
    assert store.read_json("config.json") == value
    assert list(store.read_jsonl("rows/part-0.jsonl")) == rows
    assert store.read_text("rows/part-0.jsonl").count("\n") == len(rows)


def test_invalid_json_raises_store_error_naming_the_uri(store: Store):
    store.write_text("broken.json", "{not json")
    store.write_text("broken.jsonl", '{"ok": 1}\n{oops\n')
    with pytest.raises(StoreError, match=re.escape(store.url("broken.json"))):
        store.read_json("broken.json")
    with pytest.raises(StoreError, match=re.escape(store.url("broken.jsonl")) + " line 2"):
        list(store.read_jsonl("broken.jsonl"))


def test_local_copy_holds_the_content_and_missing_keys_raise(store: Store):
    store.write_bytes("audio/clip.wav", b"RIFF....WAVE")
    with store.local_copy("audio/clip.wav") as path:
        assert Path(path).read_bytes() == b"RIFF....WAVE"
    with pytest.raises(FileNotFoundError, match=re.escape(store.url("audio/missing.wav"))):
        with store.local_copy("audio/missing.wav"):
            pass
    assert len(store.sha256("audio/clip.wav")) == 64


def test_large_file_upload_and_download_round_trip(store: Store, tmp_path: Path, large_payload: bytes):
    source = tmp_path / "source.bin"
    source.write_bytes(large_payload)
    store.upload_file(source, "checkpoints/model.bin")
    destination = tmp_path / "downloads" / "model.bin"
    destination.parent.mkdir()
    destination.write_bytes(b"stale content")
    store.download_file("checkpoints/model.bin", destination)
    assert store.size("checkpoints/model.bin") == LARGE_FILE_BYTES
    assert destination.read_bytes() == large_payload
    assert _files_in(destination.parent) == ["model.bin"]


def test_download_of_a_missing_key_leaves_the_destination_untouched(store: Store, tmp_path: Path):
    destination = tmp_path / "downloads" / "model.bin"
    destination.parent.mkdir()
    destination.write_bytes(b"previous")
    with pytest.raises(FileNotFoundError, match=re.escape(store.url("missing.bin"))):
        store.download_file("missing.bin", destination)
    assert destination.read_bytes() == b"previous"
    assert _files_in(destination.parent) == ["model.bin"]


# open_store --------------------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_the_uri(tmp_path: Path):
    s3 = open_store("s3://some-bucket/some/prefix/")
    assert isinstance(s3, S3Store)
    assert (s3.uri, s3.bucket, s3.prefix) == ("s3://some-bucket/some/prefix", "some-bucket", "some/prefix")
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    file_store = open_store(f"file://{tmp_path}")
    assert isinstance(file_store, LocalStore)
    assert file_store.uri == f"file://{tmp_path}"
    with pytest.raises(StoreError, match="unsupported store URI 'http://example.com/x'"):
        open_store("http://example.com/x")


# S3 specifics ------------------------------------------------------------------------------------


def test_s3_uri_forms(s3_bucket: str):
    assert S3Store(f"s3://{s3_bucket}/").uri == f"s3://{s3_bucket}"
    assert S3Store(f"s3://{s3_bucket}/a/b//").url("k.txt") == f"s3://{s3_bucket}/a/b/k.txt"
    with pytest.raises(StoreError, match="no bucket"):
        S3Store("s3:///prefix")
    with pytest.raises(StoreError, match="minimum"):
        S3Store(f"s3://{s3_bucket}", part_size=1024)


def test_s3_store_sees_only_keys_under_its_prefix(s3_bucket: str):
    bucket_root = S3Store(f"s3://{s3_bucket}")
    bucket_root.write_bytes("outside.txt", b"o")
    bucket_root.write_bytes("store-sibling/x.txt", b"s")
    bucket_root.write_bytes("store/inside.txt", b"i")
    bucket_root.write_bytes("store/", b"")  # a folder marker, as consoles create
    store = S3Store(f"s3://{s3_bucket}/store")
    assert list(store.list()) == ["inside.txt"]
    assert store.read_bytes("inside.txt") == b"i"


def test_s3_large_objects_use_multipart_transfers(s3_bucket: str, tmp_path: Path, large_payload: bytes):
    store = S3Store(f"s3://{s3_bucket}", part_size=PART_SIZE)
    source = tmp_path / "big.bin"
    source.write_bytes(large_payload)
    store.upload_file(source, "uploaded.bin")
    store.write_bytes("written.bin", large_payload)
    store.write_bytes("small.bin", b"small")
    etag = {key: store.client.head_object(Bucket=s3_bucket, Key=key)["ETag"] for key in store.list()}
    # A multipart object's ETag ends in "-<number of parts>".
    assert etag["uploaded.bin"].strip('"').endswith("-3")
    assert etag["written.bin"].strip('"').endswith("-3")
    assert "-" not in etag["small.bin"]
    assert store.read_bytes("written.bin") == large_payload


def test_s3_interrupted_download_leaves_no_partial_file(s3_bucket: str, tmp_path: Path, large_payload: bytes):
    store = S3Store(f"s3://{s3_bucket}", part_size=PART_SIZE)
    store.write_bytes("big.bin", large_payload)
    destination = tmp_path / "big.bin"
    destination.write_bytes(b"previous")
    part_requests = []
    lock = threading.Lock()

    def fail_after_first_part(**_):
        with lock:
            part_requests.append(1)
            if len(part_requests) > 1:
                raise RuntimeError("connection dropped")

    store.client.meta.events.register("before-call.s3.GetObject", fail_after_first_part)
    with pytest.raises(RuntimeError, match="connection dropped"):
        store.download_file("big.bin", destination)
    assert len(part_requests) >= 2
    assert destination.read_bytes() == b"previous"
    assert _files_in(tmp_path) == ["big.bin"]


def test_s3_list_follows_pagination(s3_bucket: str):
    store = S3Store(f"s3://{s3_bucket}/paged", list_page_size=10)
    keys = [f"item-{index:03d}.txt" for index in range(35)]
    for key in reversed(keys):
        store.write_bytes(key, b"")
    requests = []
    store.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: requests.append(1))
    assert list(store.list()) == keys
    assert len(requests) == 4


def test_s3_missing_bucket_raises_store_error_naming_it(s3_environment: str, tmp_path: Path):
    store = S3Store("s3://unitvox-no-such-bucket/prefix")
    operations = {
        "read": lambda: store.read_bytes("key.txt"),
        "write": lambda: store.write_bytes("key.txt", b"x"),
        "size": lambda: store.size("key.txt"),
        "list": lambda: list(store.list()),
        "download": lambda: store.download_file("key.txt", tmp_path / "key.txt"),
    }
    for name, operation in operations.items():
        with pytest.raises(StoreError, match="bucket 'unitvox-no-such-bucket' does not exist") as raised:
            operation()
        assert "s3://unitvox-no-such-bucket/prefix" in str(raised.value), name
        assert raised.value.__cause__ is None and raised.value.__suppress_context__, name


def test_s3_without_credentials_raises_store_error(s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match=rf"s3://{s3_bucket}/key.txt: cannot read: no AWS credentials"):
        S3Store(f"s3://{s3_bucket}").read_bytes("key.txt")


def test_s3_client_is_configured_for_retries_timeouts_and_path_style(s3_environment: str):
    client = S3Store("s3://any-bucket").client
    assert client.meta.config.retries["total_max_attempts"] >= 5
    assert client.meta.config.retries["mode"] in {"standard", "adaptive"}
    assert client.meta.config.connect_timeout <= 30 and client.meta.config.read_timeout >= 30
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.endpoint_url == s3_environment
    assert client.meta.region_name == "us-east-1"


def test_s3_endpoint_and_region_variables_take_precedence(s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    moto_endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    store = S3Store(f"s3://{s3_bucket}")
    assert store.client.meta.endpoint_url == moto_endpoint
    assert store.client.meta.region_name == "eu-west-2"
    store.write_bytes("reached.txt", b"yes")
    assert store.read_bytes("reached.txt") == b"yes"


def test_s3_client_is_created_once_and_shared_across_threads_and_children(s3_bucket: str):
    store = S3Store(f"s3://{s3_bucket}/threads")
    barrier = threading.Barrier(8)
    clients = []

    def write(index: int) -> None:
        barrier.wait()  # every thread asks for the not-yet-created client at once
        clients.append(store.client)
        store.child(f"worker-{index}").write_bytes("out.txt", str(index).encode())

    threads = [threading.Thread(target=write, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    assert store.child("worker-0").client is store.client
    assert [store.read_text(f"worker-{index}/out.txt") for index in range(8)] == [str(i) for i in range(8)]


def test_boto_is_imported_only_by_the_s3_store():
    source = Path(__file__).parents[1] / "src" / "unitvox"
    importers = sorted(
        path.relative_to(source).as_posix()
        for path in source.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(boto3|botocore)\b", path.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert importers == ["store/s3.py"]


def test_local_listing_follows_folder_links_once_and_reports_loops_and_dangling_links(tmp_path: Path):
    root = tmp_path / "store"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "a" / "deep" / "x.txt").write_text("x")
    (root / "b.txt").write_text("b")
    os.symlink("../..", root / "a" / "deep" / "loop")  # an ancestor: walking it would never end
    os.symlink("missing.txt", root / "a" / "dangling.txt")
    os.symlink("a", root / "0-alias")  # sorts before its target, which is still listed as itself
    os.symlink(tmp_path / "outside", root / "linked")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "y.txt").write_text("y")
    store = LocalStore(str(root))
    keys, unlisted = store.scan()
    assert keys == ["a/deep/x.txt", "b.txt", "linked/y.txt"] == list(store.list())
    assert [(item.key, item.reason) for item in unlisted] == [
        ("0-alias", "repeated_folder"), ("a/dangling.txt", "dangling_link"), ("a/deep/loop", "symlink_loop")]
    assert list(store.list("a/")) == ["a/deep/x.txt"]
