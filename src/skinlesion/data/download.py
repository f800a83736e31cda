"""Fetch the raw HAM10000 files: from Harvard Dataverse by file id, or from a local mirror.

Dataverse (doi:10.7910/DVN/DBW86T) serves each file at ``/api/access/datafile/{id}``;
ingested tables (the metadata) need ``?format=original`` to get the uploaded CSV back. The
transfer streams into ``<name>.part``, resumes with an HTTP ``Range`` request after an
interruption, retries with exponential backoff, and is renamed into place only once its size
and MD5 match what the config pins.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import requests
from tqdm.auto import tqdm

from skinlesion.config import FileSpec
from skinlesion.data.checksum import ChecksumError, compare
from skinlesion.io import atomic_path

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A file could not be fetched after all retries."""


def check_file(path: Path, spec: FileSpec) -> None:
    """Raise ChecksumError naming the file, expected and actual values."""
    _, _, problems = compare(path, spec.size, spec.md5)
    if problems:
        raise ChecksumError(f"{spec.name}: {'; '.join(problems)}")


def fetch_dataverse(
    spec: FileSpec,
    dest: str | os.PathLike,
    *,
    base_url: str,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    chunk_size: int = 1 << 16,
    progress: bool = True,
) -> Path:
    """Download one file from Dataverse's access API, resuming and verifying it."""
    if spec.id is None:
        raise DownloadError(f"{spec.name}: no Dataverse file id in the config (files.{spec.name}.id)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = f"{base_url.rstrip('/')}/api/access/datafile/{spec.id}"
    params = {"format": "original"} if spec.original else None
    last_error: Exception | None = None
    with requests.Session() as session:
        for attempt in range(retries + 1):
            if attempt:
                delay = backoff_s * 2 ** (attempt - 1)
                log.warning("%s: attempt %d failed (%s); retrying in %.1fs", spec.name, attempt, last_error, delay)
                time.sleep(delay)
            offset = part.stat().st_size if part.exists() else 0
            if spec.size is not None and offset >= spec.size:
                break  # a previous attempt already has every byte
            try:
                _stream(session, url, params, part, offset, spec, timeout_s, chunk_size, progress)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last_error = exc
                continue
            got = part.stat().st_size
            if spec.size is not None and got < spec.size:
                last_error = DownloadError(f"transfer ended at {got} of {spec.size} bytes")
                continue
            break
        else:
            raise DownloadError(
                f"{spec.name}: giving up after {retries + 1} attempts from {url}: {last_error}; "
                f"the partial file {part} is kept and the next run resumes it"
            )
    try:
        check_file(part, spec)
    except ChecksumError:
        part.unlink(missing_ok=True)  # a complete but wrong file cannot be resumed into a right one
        raise
    os.replace(part, dest)
    return dest


def _stream(session, url, params, part: Path, offset: int, spec: FileSpec, timeout_s, chunk_size, progress) -> None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, params=params, headers=headers, stream=True, timeout=timeout_s) as resp:
        if resp.status_code == 416 and offset:
            return  # nothing left past our offset: the part file is complete
        if resp.status_code not in (200, 206):
            raise DownloadError(f"{spec.name}: HTTP {resp.status_code} from {resp.url}")
        if resp.status_code == 200 and offset:
            log.warning("%s: server ignored the Range request; starting over", spec.name)
            offset = 0
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as fh,
            tqdm(
                total=spec.size,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=spec.name,
                disable=not progress,
            ) as bar,
        ):
            for chunk in resp.iter_content(chunk_size):
                fh.write(chunk)
                bar.update(len(chunk))


def copy_from_mirror(spec: FileSpec, mirror_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy one file from a local mirror directory, verifying it against ``spec``."""
    mirror_dir = Path(mirror_dir)
    src = mirror_dir / spec.name
    if not src.is_file():
        raise FileNotFoundError(f"{spec.name}: not found in the mirror directory {mirror_dir} (looked for {src})")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        check_file(tmp, spec)
    return Path(dest)


def download(spec: FileSpec, dest: str | os.PathLike, *, data_dir: str | None, dataverse: dict) -> Path:
    """The download rule: from the mirror ``data_dir`` when one is set, else from Dataverse."""
    if data_dir:
        return copy_from_mirror(spec, data_dir, dest)
    settings = {k: dataverse[k] for k in ("base_url", "retries", "backoff_s", "timeout_s")}
    return fetch_dataverse(spec, dest, **settings)
