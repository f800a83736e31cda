"""An external test set (ISIC 2018 Task 3) at the internal operating threshold; its ground truth in either
published form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.evaluate.predict import predict_images
from skinlesion.evaluate.predictions import write_csv
from skinlesion.evaluate.scoring import metrics_from_predictions, write_result

ONE_HOT = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def read_ground_truth(path: str | os.PathLike) -> pd.DataFrame:
    """image_id and true_dx from ISIC 2018 Task 3 ground truth in either published form.

    Dataverse's metadata form has ``image_id, dx, ...``; the challenge's one-hot form has
    ``image, MEL, NV, BCC, AKIEC, BKL, DF, VASC``.
    """
    gt = pd.read_csv(path, sep=None, engine="python")
    if {"image_id", "dx"} <= set(gt.columns):
        out = gt[["image_id", "dx"]].rename(columns={"dx": "true_dx"})
    elif {"image", *ONE_HOT} <= set(gt.columns):
        onehot = gt[ONE_HOT].to_numpy()
        if not np.allclose(onehot.sum(axis=1), 1.0):
            bad = gt.loc[~np.isclose(onehot.sum(axis=1), 1.0), "image"].tolist()[:5]
            raise ValueError(f"{path}: one-hot rows must sum to 1; not so for {bad}")
        out = pd.DataFrame({"image_id": gt["image"], "true_dx": [ONE_HOT[i].lower() for i in onehot.argmax(axis=1)]})
    else:
        raise ValueError(
            f"{path}: unrecognised ground truth; expected columns image_id,dx,... (Dataverse) or "
            f"image,{','.join(ONE_HOT)} (ISIC 2018 challenge); found {', '.join(gt.columns)}"
        )
    unknown = ~out["true_dx"].isin(CLASSES)
    if unknown.any():
        raise ValueError(f"{path}: unknown diagnoses {sorted(set(out.loc[unknown, 'true_dx']))}")
    return out.reset_index(drop=True)


def evaluate_external(
    checkpoint: str,
    images: str,
    ground_truth: str,
    internal_metrics: str,
    out_metrics: str | os.PathLike,
    out_predictions: str | os.PathLike,
    *,
    tta: bool,
    n_boot: int,
    seed: int,
    provenance: dict | None = None,
    device: str = "cpu",
) -> dict:
    """An external test set, at the operating threshold chosen on the internal validation split.

    The one-hot challenge ground truth carries no lesion ids, so external confidence intervals
    resample images (for either ground-truth form, which therefore give identical metrics).
    """
    gt = read_ground_truth(ground_truth)
    preds = predict_images(checkpoint, images, tta=tta, progress=False, device=device, population=False)
    missing = sorted(set(gt["image_id"]) - set(preds["image_id"]))
    if missing:
        raise ValueError(f"{images}: no image for {len(missing)} ground-truth row(s), e.g. {missing[:5]}")
    preds = gt.merge(preds, on="image_id", how="left", validate="one_to_one")
    preds.insert(1, "lesion_id", preds["image_id"])
    internal = json.loads(Path(internal_metrics).read_text())
    threshold, prior = internal["test"]["threshold"], internal.get("class_prior")
    result = metrics_from_predictions(preds, threshold=threshold, n_boot=n_boot, seed=seed, prior=prior)
    result["bootstrap_unit"] = "image"
    result["provenance"] = provenance or {}
    write_csv(preds, out_predictions)
    write_result(result, out_metrics)
    return result
