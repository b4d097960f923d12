"""Files written whole or not at all, and hashed without being read whole."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which would race with other threads.
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def written_atomically(path: Path) -> Iterator[BinaryIO]:
    """A binary stream whose bytes become `path` only once the block ends without error: they are
    written under a temporary name beside it and renamed, so a reader (or a process that resumes a
    killed one) sees the old file or the new one, never half of one. The temporary name is unique
    across machines and processes (the pods of a Job share one volume and often one pid, 1), and is
    `.<name>.partial-<random>`, so that what a killed writer left can be found and removed. The file
    gets the permissions a plain open() would give it (mkstemp's are owner-only, which the images'
    non-root user could not read in a models/ folder copied in)."""
    descriptor, name = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.partial-")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), _FILE_MODE)
            yield stream
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a megabyte at a time (weights and galleries run to gigabytes)."""
    return files_sha256([path])


def files_sha256(paths: Iterable[Path]) -> str:
    """sha256 of the files' bytes one after the other (as if concatenated), each read once, a
    megabyte at a time: file_sha256 for one file, a fingerprint of several (models_fingerprint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
