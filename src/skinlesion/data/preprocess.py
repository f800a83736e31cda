"""Extract, validate and preprocess: raw zips + metadata -> one uint8 image cache.

The cache is a single ``.npy`` array of shape (N, S, S, 3) that training memory-maps, plus an
index table whose row ``i`` describes image ``i``. Every image is centre-cropped to a square
(so full 600x450 frames and already-square crops get the same framing) and resized to S.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from skinlesion import CLASSES, MALIGNANT
from skinlesion.io import atomic_path

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
OPTIONAL_COLUMNS = ["dataset"]  # added in the newer Dataverse release of the metadata
IMAGE_NAME = re.compile(r"(?:^|/)(ISIC_\d+)\.jpe?g$", re.IGNORECASE)
BAD_IMAGE_POLICIES = ("fail", "skip")


class DataValidationError(ValueError):
    """The raw data do not match their metadata (missing, extra, duplicate or corrupt images)."""


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check the HAM10000 metadata CSV, with or without the ``dataset`` column."""
    path = Path(path)
    try:
        meta = pd.read_csv(path, dtype={"lesion_id": str, "image_id": str, "dx": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(meta.columns)}")
    for column in ("lesion_id", "image_id", "dx"):
        empty = meta[column].isna()
        if empty.any():
            raise DataValidationError(f"{path}: column {column} is empty on row(s) {_rows(empty)}")
    unknown = ~meta["dx"].isin(CLASSES)
    if unknown.any():
        raise DataValidationError(
            f"{path}: unknown dx {sorted(set(meta.loc[unknown, 'dx']))} on row(s) {_rows(unknown)}; "
            f"expected one of {', '.join(CLASSES)}"
        )
    dup = meta["image_id"].duplicated(keep=False)
    if dup.any():
        raise DataValidationError(f"{path}: image_id repeated: {sorted(set(meta.loc[dup, 'image_id']))[:10]}")
    keep = REQUIRED_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in meta.columns]
    return meta[keep].sort_values("image_id", kind="stable").reset_index(drop=True)


def _rows(mask: pd.Series) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + 2).tolist()  # +2: 1-based, after the header line
    return ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")


def load_square(source: str | os.PathLike | bytes | Image.Image, size: int) -> np.ndarray:
    """Decode an image, centre-crop it to a square and resize it to ``size``: uint8 (size, size, 3).

    This is the one preprocessing function: the cache, ``predict`` and the service all call it, so they
    see the same pixels (tests/test_preprocess.py checks on full-size HAM10000 JPEGs). An opened image
    that is not decoded yet is decoded here, as one read from a path or bytes is.
    """
    img = (
        source
        if isinstance(source, Image.Image)
        else Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    )
    # Let libjpeg decode at a reduced scale when the image is much larger than needed (a no-op for other
    # formats, and for an image already decoded).
    img.draft("RGB", (size, size))
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _zip_members(zips: list[Path]) -> dict[str, tuple[Path, str]]:
    """Map image_id -> (zip, member) over all archives; reject unreadable zips and duplicates."""
    members: dict[str, tuple[Path, str]] = {}
    for zpath in zips:
        try:
            with zipfile.ZipFile(zpath) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataValidationError(f"{zpath}: not a readable zip archive (truncated or corrupt?): {exc}") from exc
        for name in names:
            m = IMAGE_NAME.search(name)
            if m is None or "__MACOSX" in name:
                continue
            image_id = m.group(1)
            if image_id in members:
                other = members[image_id]
                raise DataValidationError(f"{image_id}: present twice, in {other[0]}:{other[1]} and {zpath}:{name}")
            members[image_id] = (zpath, name)
    return members


def preprocess(
    zips: list[str | os.PathLike],
    metadata: str | os.PathLike,
    out_images: str | os.PathLike,
    out_index: str | os.PathLike,
    out_skipped: str | os.PathLike,
    *,
    image_size: int,
    on_bad_image: str = "fail",
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Build the image cache and index table from the raw zips and metadata.

    Every metadata row must have exactly one decodable image and every image a metadata row.
    With ``on_bad_image="fail"`` any violation raises DataValidationError naming the image and
    file, and nothing is written. With ``"skip"`` the offending images are left out and listed
    in ``out_skipped`` with the reason.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
    zips = [Path(z) for z in zips]
    meta = read_metadata(metadata)
    members = _zip_members(zips)

    problems: list[dict] = []
    for image_id in sorted(set(meta["image_id"]) - set(members)):
        problems.append({"image_id": image_id, "file": str(metadata), "reason": "metadata row has no image"})
    for image_id in sorted(set(members) - set(meta["image_id"])):
        zpath, name = members[image_id]
        problems.append({"image_id": image_id, "file": f"{zpath}:{name}", "reason": "image has no metadata row"})
    _raise_or_log(problems, on_bad_image)

    meta = meta[meta["image_id"].isin(members.keys())].reset_index(drop=True)
    decoded, bad = _decode_all(meta["image_id"].tolist(), members, image_size, threads, progress)
    _raise_or_log(bad, on_bad_image)
    problems += bad

    keep = np.array([i for i, arr in enumerate(decoded) if arr is not None], dtype=np.int64)
    index = meta.iloc[keep].reset_index(drop=True)
    if index.empty:
        raise DataValidationError("no usable images remain after validation")
    index.insert(0, "row", np.arange(len(index)))
    index["malignant"] = index["dx"].isin(MALIGNANT).astype(int)
    index["source"] = [Path(members[i][0]).name for i in index["image_id"]]

    # Renamed innermost first: the cache, then the skipped list, the index last, so a newer index is
    # never beside an older cache.
    with (
        atomic_path(out_index) as tmp_index,
        atomic_path(out_skipped) as tmp_skipped,
        atomic_path(out_images) as tmp_images,
    ):
        arr = np.lib.format.open_memmap(
            tmp_images, mode="w+", dtype=np.uint8, shape=(len(index), image_size, image_size, 3)
        )
        for row, src in enumerate(keep):
            arr[row] = decoded[src]
        arr.flush()
        del arr
        index.to_csv(tmp_index, index=False, lineterminator="\n")
        pd.DataFrame(problems, columns=["image_id", "file", "reason"]).to_csv(
            tmp_skipped, index=False, lineterminator="\n"
        )
    log.info("cached %d images at %dx%d (%d skipped)", len(index), image_size, image_size, len(problems))
    return index


def _raise_or_log(problems: list[dict], policy: str) -> None:
    if not problems:
        return
    lines = [f"{p['image_id']} ({p['file']}): {p['reason']}" for p in problems]
    summary = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
    if policy == "fail":
        raise DataValidationError(
            f"{len(problems)} image(s) failed validation "
            f"(set preprocess.on_bad_image: skip to leave them out):\n  {summary}"
        )
    log.warning("skipping %d image(s):\n  %s", len(problems), summary)


def _decode_all(image_ids, members, size, threads, progress):
    """Decode every image with a thread pool (Pillow releases the GIL while decoding)."""
    local = threading.local()
    opened: list[zipfile.ZipFile] = []
    lock = threading.Lock()

    def archive(zpath: Path) -> zipfile.ZipFile:
        cache = getattr(local, "zips", None)
        if cache is None:
            cache = local.zips = {}
        if zpath not in cache:
            cache[zpath] = zipfile.ZipFile(zpath)
            with lock:
                opened.append(cache[zpath])
        return cache[zpath]

    def work(image_id):
        zpath, name = members[image_id]
        try:
            return load_square(archive(zpath).read(name), size), None
        except (UnidentifiedImageError, OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
            return None, {"image_id": image_id, "file": f"{zpath}:{name}", "reason": f"cannot decode: {exc}"}

    decoded, bad = [], []
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(work, image_ids, chunksize=64)
            for arr, problem in tqdm(results, total=len(image_ids), desc="decode", disable=not progress, mininterval=5):
                decoded.append(arr)
                if problem:
                    bad.append(problem)
    finally:
        for zf in opened:
            zf.close()
    return decoded, bad


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read an index table written by :func:`preprocess`."""
    return pd.read_csv(path, dtype={"lesion_id": str, "image_id": str, "dx": str})
