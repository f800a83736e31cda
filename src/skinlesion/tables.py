"""The split tables every stage reads, and the guard of the sealed test split (pandas only).

The split rule writes ``split.csv`` (every image: train, val or test) and ``development.csv``
(train and val only). Training, model selection, thresholds, calibration, normalisation statistics
and the metadata model read the development table (:func:`load_development_table`), which refuses
a table holding any other split; only the evaluate rules (evaluate, evaluate_ensemble,
evaluate_deployed) read the test rows (:func:`load_split_table`). See docs/evaluation.md.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.data.preprocess import read_index
from skinlesion.io import atomic_path

DEVELOPMENT_SPLITS = ("train", "val")


class SealedTestError(ValueError):
    """A development-side step was given rows of the test split (or of any split but train and val)."""


def read_split(split_csv: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(split_csv, dtype={"image_id": str, "lesion_id": str, "dx": str})


def load_split_table(index_csv, split_csv) -> pd.DataFrame:
    """The index table with each image's split, in cache row order (every split: the evaluate rule's)."""
    index = read_index(index_csv)
    split = read_split(split_csv)
    table = index.merge(split[["image_id", "split"]], on="image_id", how="left", validate="one_to_one")
    if table["split"].isna().any():
        missing = table.loc[table["split"].isna(), "image_id"].tolist()[:5]
        raise ValueError(f"{split_csv}: no split for cached image(s) {missing}")
    return table


def development_rows(split: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """``split`` itself, after checking it holds train and val rows only."""
    other = ~split["split"].isin(DEVELOPMENT_SPLITS)
    if other.any():
        found = sorted(set(split.loc[other, "split"]))
        raise SealedTestError(
            f"{source}: {int(other.sum())} row(s) of split {found}; training, selection, thresholds, calibration "
            "and the metadata model read train and val rows only (results/data/development.csv, docs/evaluation.md)"
        )
    return split


def load_development_table(index_csv, split_csv) -> pd.DataFrame:
    """The index rows of a development split table (train and val, or one cross-validation fold's),
    with their split, in cache row order (``row``). Images the table does not list, the test
    split's among them, are left out before anything else reads them."""
    split = development_rows(read_split(split_csv), split_csv)
    index = read_index(index_csv)
    table = index.merge(split[["image_id", "split"]], on="image_id", how="inner", validate="one_to_one")
    if len(table) != len(split):
        missing = sorted(set(split["image_id"]) - set(table["image_id"]))[:5]
        raise ValueError(f"{split_csv}: image(s) {missing} are not in {index_csv}")
    return table.reset_index(drop=True)


def write_development(split: pd.DataFrame, dest) -> pd.DataFrame:
    """The development table of a full split table: its train and val rows."""
    development = split[split["split"].isin(DEVELOPMENT_SPLITS)]
    with atomic_path(dest) as tmp:
        development.to_csv(tmp, index=False, lineterminator="\n")
    return development


def labels_for(table: pd.DataFrame, task: str) -> np.ndarray:
    """Class indices (multiclass: CLASSES order) or malignant 0/1 (binary) of a table's rows."""
    if task == "multiclass":
        return table["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    return table["malignant"].to_numpy()


LEDGER_COLUMNS = ["time_utc", "git_commit", "config_sha256", "scored"]


def record_test_scoring(ledger: str | os.PathLike | None, scored: str, provenance: dict | None) -> None:
    """Append one line to the test split's ledger (``results/test_ledger.csv``): when, at which commit
    and configuration, and what was scored. Every rule that scores test rows calls it, so the ledger
    counts how often this results folder's test split has been looked at (the report shows it)."""
    if not ledger:
        return
    from datetime import UTC, datetime

    from filelock import FileLock

    provenance = provenance or {}
    row = {
        "time_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": provenance.get("git_commit", "unknown"),
        "config_sha256": provenance.get("config_sha256", "unknown"),
        "scored": scored,
    }
    path = os.fspath(ledger)
    with FileLock(path + ".lock"):
        new = not os.path.exists(path)
        pd.DataFrame([row], columns=LEDGER_COLUMNS).to_csv(path, mode="a", header=new, index=False, lineterminator="\n")


def test_scorings(ledger: str | os.PathLike) -> pd.DataFrame:
    """The ledger's lines (none when the split has not been scored)."""
    if not os.path.exists(ledger):
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    return pd.read_csv(ledger, dtype=str)
