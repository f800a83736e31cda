"""Inference on the cache and the evaluate rule: predictions, metrics JSON, figures."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from skinlesion import CLASSES
from skinlesion.datamodule import load_split_table
from skinlesion.io import atomic_path
from skinlesion.metrics import MALIGNANT_IDX, lesion_bootstrap, per_class, threshold_for_sensitivity
from skinlesion.module import LesionClassifier, load_classifier

log = logging.getLogger(__name__)


def _views(x: torch.Tensor, tta: bool) -> list[torch.Tensor]:
    """The batch itself, or its 8 dihedral transforms (4 rotations x optional flip)."""
    if not tta:
        return [x]
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


@torch.no_grad()
def predict_array(
    model: LesionClassifier, images: np.ndarray, *, batch_size: int = 128, tta: bool = False, progress: bool = False
) -> np.ndarray:
    """Class probabilities (N, C) for uint8 (N, S, S, 3) squares preprocessed like the cache."""
    from tqdm.auto import tqdm

    model.eval()
    resize = v2.Resize((model.hparams.image_size,) * 2, antialias=True)
    out = []
    for start in tqdm(range(0, len(images), batch_size), disable=not progress, desc="predict"):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        x = resize(x).to(model.device)
        probs = torch.stack([torch.softmax(model(v).float(), dim=1) for v in _views(x, tta)]).mean(0)
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.hparams.class_names)))


def probability_table(model: LesionClassifier, probs: np.ndarray, image_ids) -> pd.DataFrame:
    """One row per image: image_id, the 7 class probabilities, p_malignant, predicted dx.

    A binary model has no per-class probabilities: those columns are empty and dx is
    'malignant' or 'benign' at p_malignant >= 0.5.
    """
    table = pd.DataFrame({"image_id": list(image_ids)})
    if model.binary:
        for name in CLASSES:
            table[name] = np.nan
        table["p_malignant"] = probs[:, 1]
        table["dx"] = np.where(probs[:, 1] >= 0.5, "malignant", "benign")
    else:
        for i, name in enumerate(CLASSES):
            table[name] = probs[:, i]
        table["p_malignant"] = probs[:, MALIGNANT_IDX].sum(axis=1)
        table["dx"] = np.asarray(CLASSES)[probs.argmax(axis=1)]
    return table


def write_csv(frame: pd.DataFrame, dest) -> None:
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")


def evaluate_split(
    ckpt: str,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    *,
    split: str,
    tta: bool,
    batch_size: int = 128,
) -> tuple[pd.DataFrame, LesionClassifier]:
    """Predictions for one split of the cache, joined with the truth (dx, lesion_id)."""
    model = load_classifier(ckpt)
    table = load_split_table(index_csv, split_csv)
    part = table[table["split"] == split]
    images = np.load(images_npy, mmap_mode="r")
    probs = predict_array(model, images[np.sort(part["row"].to_numpy())], batch_size=batch_size, tta=tta)
    part = part.sort_values("row")
    preds = probability_table(model, probs, part["image_id"])
    preds.insert(1, "lesion_id", part["lesion_id"].to_numpy())
    preds.insert(2, "true_dx", part["dx"].to_numpy())
    return preds, model


def metrics_from_predictions(preds: pd.DataFrame, *, threshold: float, n_boot: int, seed: int) -> dict:
    """Metrics of a multiclass model's predictions table (with true_dx and lesion_id)."""
    y = preds["true_dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    probs = preds[list(CLASSES)].to_numpy()
    return {
        "n_images": int(len(preds)),
        "n_lesions": int(preds["lesion_id"].nunique()),
        "threshold": threshold,
        "metrics": lesion_bootstrap(
            y, probs, preds["lesion_id"].to_numpy(), threshold=threshold, n_boot=n_boot, seed=seed
        ),
        "per_class": per_class(y, probs),
    }


def evaluate_tier(
    ckpt: str,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    out_metrics: str | os.PathLike,
    out_predictions: str | os.PathLike,
    *,
    tier: str,
    tta: bool = True,
    target_sensitivity: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The evaluate rule: threshold on val, metrics with lesion-bootstrap CIs on test."""
    val, model = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="val", tta=tta)
    test, _ = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="test", tta=tta)
    threshold = threshold_for_sensitivity(
        val["true_dx"].isin(["akiec", "bcc", "mel"]).to_numpy(), val["p_malignant"].to_numpy(), target_sensitivity
    )
    result = {
        "tier": tier,
        "task": "binary" if model.binary else "multiclass",
        "tta": tta,
        "target_sensitivity": target_sensitivity,
        "image_size": model.hparams.image_size,
        "test": metrics_from_predictions(test, threshold=threshold, n_boot=n_boot, seed=seed),
    }
    write_csv(test, out_predictions)
    with atomic_path(out_metrics) as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
