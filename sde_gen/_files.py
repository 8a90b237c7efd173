"""Small file utilities shared by the checkpoint store, the interop readers and the metrics."""

from __future__ import annotations

import hashlib
import os


def sha256_of_file(path: str, sync: bool = False) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks; with `sync`, the file is also
    flushed to disk (`fsync`) before the digest is returned."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()
