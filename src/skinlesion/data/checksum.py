"""The checksum stage: verify every raw file and write the checksum table."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from skinlesion.io import atomic_path, md5sum

log = logging.getLogger(__name__)

COLUMNS = ["file", "bytes", "expected_bytes", "md5", "expected_md5", "status"]


class ChecksumError(RuntimeError):
    """A file's size or MD5 differs from the pinned value."""


def compare(path: Path, size: int | None, md5: str | None) -> tuple[int, str, list[str]]:
    """Actual size and MD5 of ``path`` and what differs from the expected values (None: not pinned)."""
    actual_size, actual_md5 = path.stat().st_size, md5sum(path)
    problems = []
    if size is not None and actual_size != size:
        problems.append(f"size expected {size} bytes, got {actual_size}")
    if md5 is not None and actual_md5 != md5.lower():
        problems.append(f"MD5 expected {md5.lower()}, got {actual_md5}")
    return actual_size, actual_md5, problems


def verify_files(paths: list[str | os.PathLike], expected: dict[str, dict], out_csv: str | os.PathLike) -> list[dict]:
    """Check size and MD5 of each file against ``expected[name]`` (keys ``size``, ``md5``).

    Writes ``out_csv`` only when every file matches. A file that does not match is renamed
    to ``<name>.corrupt`` so that no later rule reads it and the next run fetches it again;
    the error names each such file with its expected and actual values. A ``None`` MD5 is
    recorded as ``unpinned`` (Dataverse publishes no MD5 for some files).
    """
    rows, failures = [], []
    for path in map(Path, paths):
        if path.name not in expected:
            raise KeyError(f"{path.name}: no expected checksum in the config for this file")
        want = expected[path.name]
        size, digest, problems = compare(path, want.get("size"), want.get("md5"))
        pinned = want.get("md5") is not None
        rows.append(
            {
                "file": path.name,
                "bytes": size,
                "expected_bytes": "" if want.get("size") is None else want["size"],
                "md5": digest,
                "expected_md5": want.get("md5") or "",
                "status": "mismatch" if problems else ("ok" if pinned else "unpinned"),
            }
        )
        if problems:
            quarantine = path.with_name(path.name + ".corrupt")
            os.replace(path, quarantine)
            failures.append(f"{path.name}: {'; '.join(problems)} (moved to {quarantine})")
        elif not pinned:
            log.warning("%s: no MD5 pinned in the config; recorded as unpinned", path.name)
    if failures:
        raise ChecksumError("checksum verification failed:\n  " + "\n  ".join(failures))
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows
