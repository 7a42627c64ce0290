"""sqlite_ops.hashing: the one SHA-256 helper."""

from __future__ import annotations

import hashlib
import io

import pytest

from sqlite_ops import hashing


@pytest.mark.parametrize("size", [0, 1, hashing.CHUNK - 1, hashing.CHUNK, 3 * hashing.CHUNK + 7])
def test_file_digest_and_size_across_block_boundaries(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "f"
    path.write_bytes(data)
    ticks: list[int] = []
    assert hashing.sha256_file_size(path, ticks.append) == (hashlib.sha256(data).hexdigest(),
                                                            size)
    assert sum(ticks) == size
    assert hashing.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_stream_digest():
    assert hashing.sha256_stream(io.BytesIO(b"abc"))[0] == hashlib.sha256(b"abc").hexdigest()
