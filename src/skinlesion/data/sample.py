"""Build the small bundled sample (``data/sample/``) from a full HAM10000 mirror.

The sample is itself a mirror: the same file names, the original JPEG bytes (not re-encoded),
every image of each chosen lesion, an ``MD5SUMS`` file and the CC BY-NC 4.0 attribution. Its
zip entries carry a fixed timestamp, so rebuilding it from the same mirror and seed gives
byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.io import atomic_path

PARTS = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
METADATA = "HAM10000_metadata.csv"
ZIP_TIMESTAMP = (2018, 6, 1, 0, 0, 0)

ATTRIBUTION = """\
# Bundled HAM10000 sample

{n_images} dermatoscopic images of {n_lesions} lesions ({per_class}), with every image of
each chosen lesion, taken from a 200x150 re-encoding of the HAM10000 dataset so that the whole
workflow runs offline in minutes. Rebuild it with
`skinlesion make-sample --mirror DIR --out data/sample --lesions-per-class {lesions_per_class} --seed {seed}`.

Source and attribution (required by the licence):

> Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset, a large collection of
> multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161
> (2018). https://doi.org/10.1038/sdata.2018.161 — Harvard Dataverse,
> https://doi.org/10.7910/DVN/DBW86T

Licence: Creative Commons Attribution-NonCommercial 4.0 International (CC BY-NC 4.0),
https://creativecommons.org/licenses/by-nc/4.0/. Changes: images downscaled to 200x150 and a
subset selected; labels and identifiers are unchanged. Non-commercial use only.
"""


def make_sample(
    mirror: str | os.PathLike, out: str | os.PathLike, *, lesions_per_class: int, seed: int
) -> pd.DataFrame:
    """Copy every image of ``lesions_per_class`` seeded-random lesions per diagnosis."""
    mirror, out = Path(mirror), Path(out)
    meta = pd.read_csv(mirror / METADATA, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for dx in CLASSES:
        lesions = np.array(sorted(meta.loc[meta["dx"] == dx, "lesion_id"].unique()))
        take = min(lesions_per_class, len(lesions))
        chosen += sorted(rng.choice(lesions, size=take, replace=False).tolist())
    subset = meta[meta["lesion_id"].isin(set(chosen))]
    wanted = set(subset["image_id"])

    out.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        with (
            zipfile.ZipFile(mirror / part) as src,
            atomic_path(out / part) as tmp,
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as dst,
        ):
            for name in sorted(src.namelist()):
                if Path(name).stem in wanted:
                    dst.writestr(zipfile.ZipInfo(Path(name).name, ZIP_TIMESTAMP), src.read(name))
    with atomic_path(out / METADATA) as tmp:
        subset.to_csv(tmp, index=False, lineterminator="\n")
    sums = "".join(f"{hashlib.md5((out / f).read_bytes()).hexdigest()}  {f}\n" for f in (*PARTS, METADATA))
    (out / "MD5SUMS").write_text(sums)
    per_class = subset.groupby("dx").size().reindex(list(CLASSES), fill_value=0)
    (out / "README.md").write_text(
        ATTRIBUTION.format(
            n_images=len(subset),
            n_lesions=subset["lesion_id"].nunique(),
            per_class=", ".join(f"{dx} {n}" for dx, n in per_class.items()),
            lesions_per_class=lesions_per_class,
            seed=seed,
        )
    )
    return subset
