"""The split stage: a seeded train/val/test split grouped by lesion and stratified by diagnosis.

HAM10000 has 1,956 lesions photographed more than once; putting two images of one lesion on
both sides of a split leaks, so whole lesions are assigned. Within each diagnosis the lesions
are shuffled with the seed and then placed, largest first, into the split furthest below its
share of that diagnosis's images, so every split's class mix tracks the whole dataset.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.data.preprocess import DataValidationError, read_index
from skinlesion.io import atomic_path
from skinlesion.tables import load_development_table, write_development

SPLITS = ("train", "val", "test")


def make_split(index: pd.DataFrame, ratios: dict[str, float], seed: int) -> pd.DataFrame:
    """Assign every image to a split; returns image_id, lesion_id, dx, malignant, split."""
    if set(ratios) != set(SPLITS):
        raise ValueError(f"split ratios need exactly the keys {SPLITS}, got {sorted(ratios)}")
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must sum to 1, got {sum(ratios.values())} from {ratios}")
    mixed = index.groupby("lesion_id")["dx"].nunique()
    if (mixed > 1).any():
        raise DataValidationError(f"lesion(s) with more than one dx: {mixed[mixed > 1].index.tolist()[:10]}")

    rng = np.random.default_rng(seed)
    share = np.array([ratios[s] for s in SPLITS], dtype=float)
    lesions = index.groupby("lesion_id", sort=True).agg(dx=("dx", "first"), n=("image_id", "size"))
    assignment: dict[str, str] = {}
    for dx in CLASSES:
        group = lesions[lesions["dx"] == dx]
        if group.empty:
            continue
        shuffled = group.iloc[rng.permutation(len(group))]
        # Largest lesions first (stable, so ties keep the seeded order), each into the split
        # with the largest shortfall against its target share of this class's images.
        placed = shuffled.sort_values("n", ascending=False, kind="stable")
        target = share * group["n"].sum()
        filled = np.zeros(len(SPLITS))
        for lesion_id, n in zip(placed.index, placed["n"], strict=True):
            k = int(np.argmax((target - filled) / np.maximum(target, 1e-12)))
            filled[k] += n
            assignment[lesion_id] = SPLITS[k]

    out = index[["image_id", "lesion_id", "dx", "malignant"]].copy()
    out["split"] = out["lesion_id"].map(assignment)
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)


def split_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Split x class image counts, with lesion and malignant counts and a total row."""
    counts = pd.crosstab(split["split"], split["dx"]).reindex(index=list(SPLITS), columns=list(CLASSES), fill_value=0)
    counts["images"] = counts.sum(axis=1)
    counts["lesions"] = split.groupby("split")["lesion_id"].nunique().reindex(list(SPLITS), fill_value=0)
    counts["malignant"] = split.groupby("split")["malignant"].sum().reindex(list(SPLITS), fill_value=0)
    counts.loc["all"] = [
        *counts[list(CLASSES)].sum(),
        len(split),
        split["lesion_id"].nunique(),
        split["malignant"].sum(),
    ]
    counts.index.name = "split"
    return counts.reset_index()


def write_split(
    index_csv: str | os.PathLike,
    out_split: str | os.PathLike,
    out_counts: str | os.PathLike,
    out_development: str | os.PathLike,
    *,
    ratios: dict[str, float],
    seed: int,
) -> pd.DataFrame:
    """The split rule: index table -> split table, split x class count table, and the development
    table (train and val rows: what every step but the evaluate rules reads, :mod:`skinlesion.tables`)."""
    split = make_split(read_index(index_csv), ratios, seed)
    for frame, dest in ((split, out_split), (split_counts(split), out_counts)):
        with atomic_path(dest) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
    write_development(split, out_development)
    return split


def channel_stats(
    images_npy: str | os.PathLike,
    index_csv: str | os.PathLike,
    split_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    split: str = "train",
    chunk: int = 512,
) -> dict:
    """Per-channel mean and std (pixel values scaled to [0, 1]) of one split of the cache
    (``split_csv``: a development table, :func:`skinlesion.tables.load_development_table`)."""
    images = np.load(images_npy, mmap_mode="r")
    table = load_development_table(index_csv, split_csv)
    rows = table.loc[table["split"] == split, "row"].to_numpy()
    if rows.size == 0:
        raise ValueError(f"{split_csv}: the {split} split is empty")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, rows.size, chunk):
        block = images[np.sort(rows[start : start + chunk])].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
    n = rows.size * images.shape[1] * images.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    stats = {
        "split": split,
        "n_images": int(rows.size),
        "image_size": int(images.shape[1]),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
