"""Small file helpers shared by every stage: atomic writes and checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    If the body raises, the temporary file is removed and ``dest`` is left untouched, so
    no half-written output is ever seen under its final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}{dest.suffix}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file (``algorithm``: a hashlib name), read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file (the digest Dataverse and MD5SUMS publish)."""
    return file_digest(path, "md5")


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    return file_digest(path, "sha256")


def read_md5sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse ``md5sum`` output (``<hex>  <name>`` per line) into ``{name: hex}``."""
    sums: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 32:
            raise ValueError(f"{path}:{lineno}: not an md5sum line: {line!r}")
        sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums
