"""The asset store on a disk that fills up (a small tmpfs), and after a killed writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.assets.blobs import LocalBlobStore
from backend.errors import AssetStoreError

from .. import private_servers


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with private_servers.small_disk(root, size_mb=2):
        store = LocalBlobStore(root)
        kept = store.write_bytes(b"x" * 100_000)
        with pytest.raises(AssetStoreError, match="could not save the file") as caught:
            store.write_bytes(os.urandom(3 * 1024 * 1024))  # more than the disk holds
        assert "No space left on device" in str(caught.value) and "资源存储" in caught.value.zh
        assert list((root / "tmp").iterdir()) == []  # the part written was removed
        assert store.path(kept.sha256).read_bytes() == b"x" * 100_000  # the rest untouched
        again = store.write_bytes(b"y" * 100_000)  # space enough again: writes work
        assert store.exists(again.sha256)


def test_a_killed_writers_temp_file_is_removed_by_the_next_store_on_the_host(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalBlobStore(root)
    # A writer that dies mid-write (SIGKILL) leaves its temp file behind.
    script = ("import os, sys; from backend.assets.blobs import LocalBlobStore; s = LocalBlobStore(sys.argv[1]);"
              "g = s.stage(iter([b'a' * 10, b'b' * 10]), max_bytes=100); g.__enter__(); os._exit(9)")
    subprocess.run([sys.executable, "-c", script, str(root)], check=False, cwd=Path(__file__).resolve().parents[2])
    [left] = list((root / "tmp").iterdir())
    live = root / "tmp" / left.name.replace(left.name.split("-")[1], str(os.getpid()), 1)
    live.write_bytes(b"a write still going on")  # a live process's part stays
    LocalBlobStore(root)
    assert sorted(p.name for p in (root / "tmp").iterdir()) == [live.name]
