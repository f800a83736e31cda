"""Build a downscaled HAM10000 mirror from the Dataverse originals.

The mirror is what ``data_dir`` points the workflow at: the Dataverse file names
(doi:10.7910/DVN/DBW86T) with the images re-encoded small, plus an ``MD5SUMS`` file in
``md5sum`` format (``<hex>  <name>``, read by :func:`skinlesion.io.read_md5sums`)::

    HAM10000_images_part_1.zip   every image of the original part 1, at the zip root
    HAM10000_images_part_2.zip   every image of the original part 2, at the zip root
    HAM10000_metadata.csv        the original metadata, byte for byte
    MD5SUMS                      MD5 of the three files above

Each image is decoded, converted to RGB and resized to the full frame (no crop) with Pillow's
bicubic filter (``RESAMPLE``), then encoded as a baseline JPEG with the standard (IJG) tables
scaled to ``quality``, 4:2:0 chroma subsampling, standard Huffman tables and no EXIF or ICC
data. The zips are uncompressed (stored), their members sorted by name, every member with the
same timestamp and permissions, so the same originals and the same Pillow/libjpeg build give
byte-identical zips and the same ``MD5SUMS``.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from skinlesion.io import atomic_path, md5sum

log = logging.getLogger(__name__)

PARTS = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
METADATA = "HAM10000_metadata.csv"
SUMS = "MD5SUMS"
# The zip member settings of the shared mirror (and of data/sample): a fixed timestamp,
# rw-r--r-- permissions recorded as from Unix, no compression (JPEGs do not compress).
ZIP_TIMESTAMP = (2018, 6, 1, 0, 0, 0)
ZIP_MODE = 0o644
SIZE = (200, 150)
QUALITY = 75
RESAMPLE = "BICUBIC"  # a Pillow Image.Resampling name
SUBSAMPLING = 2  # Pillow's code for 4:2:0


class MirrorError(RuntimeError):
    """The originals are missing or unreadable."""


def write_zip(path: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> None:
    """Write ``(name, data)`` members, in the order given, with the mirror's fixed zip settings."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, on every platform
            info.external_attr = ZIP_MODE << 16
            zf.writestr(info, data)


def image_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The JPEGs of a zip by their base name (folders, macOS ``__MACOSX``/``._`` entries skipped)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in path.parts or path.name.startswith("."):
            continue
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        if path.name in members:
            raise MirrorError(f"{zf.filename}: two members named {path.name}")
        members[path.name] = info
    return members


def reencode(data: bytes, size: tuple[int, int], quality: int) -> bytes:
    """One image resized to ``size`` (full frame) and encoded with the mirror's JPEG settings."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").resize(size, Image.Resampling[RESAMPLE])
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality, subsampling=SUBSAMPLING, optimize=False, progressive=False)
    return buf.getvalue()


def make_mirror(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: tuple[int, int] = SIZE,
    quality: int = QUALITY,
) -> dict[str, str]:
    """Write the downscaled mirror of the Dataverse originals in ``source`` into ``out``.

    Returns ``{file name: MD5}`` for the three data files, as written to ``out/MD5SUMS``.
    Every input is checked before anything is written; each output is written under a
    temporary name and renamed when complete, and ``MD5SUMS`` is removed first and written
    last, so an interrupted run never leaves a mirror whose checksums look valid.
    """
    source, out = Path(source), Path(out)
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {width}x{height}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    missing = [name for name in (*PARTS, METADATA) if not (source / name).is_file()]
    if missing:
        raise MirrorError(
            f"{source}: missing {', '.join(missing)} (the Dataverse originals of doi:10.7910/DVN/DBW86T; "
            f"the metadata is the CSV original of the ingested table, /api/access/datafile/<id>?format=original)"
        )
    if out.resolve() == source.resolve():
        raise MirrorError(f"--out {out} is the source directory; the mirror would overwrite the originals")

    out.mkdir(parents=True, exist_ok=True)
    (out / SUMS).unlink(missing_ok=True)
    for part in PARTS:
        with zipfile.ZipFile(source / part) as src:
            members = image_members(src)
            if not members:
                raise MirrorError(f"{source / part}: no JPEG images in the zip")

            def images(src=src, members=members, part=part):
                for i, name in enumerate(sorted(members), start=1):
                    try:
                        yield name, reencode(src.read(members[name]), (width, height), quality)
                    except Exception as exc:
                        raise MirrorError(f"{source / part}: {members[name].filename}: {exc}") from exc
                    if i % 1000 == 0:
                        log.info("%s: %d of %d images", part, i, len(members))

            with atomic_path(out / part) as tmp:
                write_zip(tmp, images())
        log.info("%s: %d images at %dx%d, JPEG quality %d", out / part, len(members), width, height, quality)
    with atomic_path(out / METADATA) as tmp:
        tmp.write_bytes((source / METADATA).read_bytes())

    sums = {name: md5sum(out / name) for name in (*PARTS, METADATA)}
    with atomic_path(out / SUMS) as tmp:
        tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return sums
