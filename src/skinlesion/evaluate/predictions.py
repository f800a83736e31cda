"""Prediction tables (pandas only): probability columns, per-lesion aggregation, metadata fusion, means of
models."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skinlesion import CLASSES, malignant_probability
from skinlesion.evaluate.metrics import is_binary
from skinlesion.io import atomic_path
from skinlesion.train.metadata import fuse, log_likelihood_ratio


def set_class_probabilities(table: pd.DataFrame, probs: np.ndarray, prior) -> None:
    """Write (N, 7) probabilities into ``table``: a column per class, p_malignant (with the
    checkpoint's ``malignant_prior``, see :func:`skinlesion.malignant_probability`) and dx."""
    table[list(CLASSES)] = probs
    table["p_malignant"] = malignant_probability(probs, prior)
    table["dx"] = np.asarray(CLASSES)[probs.argmax(axis=1)]


def set_binary_probability(table: pd.DataFrame, p_malignant: np.ndarray) -> None:
    """A binary model's columns: no per-class probabilities, p_malignant, dx benign or malignant at 0.5."""
    table[list(CLASSES)] = np.nan
    table["p_malignant"] = p_malignant
    table["dx"] = np.where(table["p_malignant"] >= 0.5, "malignant", "benign")


def write_csv(frame: pd.DataFrame, dest) -> None:
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")


def with_metadata(preds: pd.DataFrame, meta: dict, table: pd.DataFrame, prior) -> pd.DataFrame:
    """A predictions table with the metadata fused into its class probabilities."""
    probs = fuse(preds[list(CLASSES)].to_numpy(), log_likelihood_ratio(meta, table.loc[preds["image_id"]]))
    out = preds.copy()
    set_class_probabilities(out, probs, prior)
    return out


def per_lesion(preds: pd.DataFrame, prior) -> pd.DataFrame:
    """One row per lesion: its images' probabilities averaged (as TTA averages the views of one
    image), then p_malignant (with ``prior``, as for one image) and dx from the average.

    HAM10000 photographs some lesions several times, so image-level metrics count those lesions
    more than once; this table counts every lesion once, as a clinic diagnoses it.
    """
    grouped = preds.groupby("lesion_id", sort=True)
    mixed = grouped["true_dx"].nunique() > 1
    if mixed.any():
        raise ValueError(f"lesion_id {mixed.idxmax()}: its images have different true_dx")
    out = grouped.agg(image_id=("image_id", " ".join), true_dx=("true_dx", "first")).reset_index()
    out = out[["image_id", "lesion_id", "true_dx"]]
    if is_binary(preds):
        set_binary_probability(out, grouped["p_malignant"].mean().to_numpy())
    else:
        set_class_probabilities(out, grouped[list(CLASSES)].mean().to_numpy(), prior)
    return out


def mean_predictions(tables: list[pd.DataFrame], prior) -> pd.DataFrame:
    """The mean of several models' predictions of the same images: their class probabilities
    averaged (a binary model's p_malignant), then p_malignant and dx as for one model."""
    first = tables[0]
    for other in tables[1:]:
        if list(other["image_id"]) != list(first["image_id"]):
            raise ValueError("ensemble: the tiers' prediction tables do not list the same images in the same order")
    out = first[["image_id", "lesion_id", "true_dx"]].copy()
    if is_binary(first):
        set_binary_probability(out, np.mean([t["p_malignant"].to_numpy() for t in tables], axis=0))
    else:
        set_class_probabilities(out, np.mean([t[list(CLASSES)].to_numpy() for t in tables], axis=0), prior)
    return out
