"""Each live unitvox process gets its own numba cache folder (parallel compiles corrupt a shared one)."""

import os
import subprocess
import sys

from unitvox import jitcache

CLAIM = "import os, unitvox; print(os.environ['NUMBA_CACHE_DIR'], flush=True); import sys; sys.stdin.read()"


def _environment(tmp_path, **extra):
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("NUMBA_CACHE_DIR", jitcache.OWNER_VARIABLE)}
    return {**environment, "XDG_CACHE_HOME": str(tmp_path), **extra}


def _start(environment):
    return subprocess.Popen([sys.executable, "-c", CLAIM], env=environment, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _folders(processes):
    try:
        return [process.stdout.readline().strip() for process in processes]
    finally:
        for process in processes:
            process.communicate("")


def test_processes_running_at_once_get_different_cache_folders(tmp_path):
    folders = _folders([_start(_environment(tmp_path)) for _ in range(3)])
    assert len(set(folders)) == 3, folders
    assert all(folder.startswith(str(tmp_path / "unitvox" / "numba")) for folder in folders)


def test_a_finished_process_frees_its_folder_for_the_next(tmp_path):
    first = _folders([_start(_environment(tmp_path))])
    second = _folders([_start(_environment(tmp_path))])
    assert first == second  # compiled code is reused run after run


def test_a_child_does_not_share_the_folder_its_parent_holds(tmp_path):
    parent = _start(_environment(tmp_path))
    try:
        held = parent.stdout.readline().strip()
        # What a shard inherits from the pipeline process that started it.
        child = _folders([_start(_environment(tmp_path, NUMBA_CACHE_DIR=held, **{jitcache.OWNER_VARIABLE: held}))])
    finally:
        parent.communicate("")
    assert child[0] != held


def test_a_cache_folder_the_user_chose_is_kept(tmp_path):
    chosen = str(tmp_path / "mine")
    assert _folders([_start(_environment(tmp_path, NUMBA_CACHE_DIR=chosen))]) == [chosen]
