"""Inference on the cache and the evaluate rule: predictions, metrics JSON, figures."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from skinlesion import CLASSES, MALIGNANT, malignant_probability
from skinlesion.io import atomic_path
from skinlesion.metadata import fuse, load_metadata_model, log_likelihood_ratio
from skinlesion.metrics import (
    is_binary,
    labelled,
    lesion_bootstrap,
    per_class,
    summary_scores,
    threshold_for_sensitivity,
)
from skinlesion.module import LesionClassifier, load_classifier
from skinlesion.tables import load_split_table

log = logging.getLogger(__name__)
CALIBRATION_NOTE = "population probabilities: the class columns reweighted by the training split's class frequencies"


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
        set_binary_probability(table, probs[:, 1])
    else:
        set_class_probabilities(table, probs, model.hparams.get("malignant_prior"))
    return table


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
    return predict_rows(model, images_npy, table[table["split"] == split], tta=tta, batch_size=batch_size), model


def predict_rows(
    model: LesionClassifier, images_npy: str, part: pd.DataFrame, *, tta: bool, batch_size: int = 128
) -> pd.DataFrame:
    """Predictions for the rows of a split table (cache ``row``, image_id, lesion_id, dx), in cache order."""
    images = np.load(images_npy, mmap_mode="r")
    part = part.sort_values("row")
    probs = predict_array(model, images[part["row"].to_numpy()], batch_size=batch_size, tta=tta)
    preds = probability_table(model, probs, part["image_id"])
    preds.insert(1, "lesion_id", part["lesion_id"].to_numpy())
    preds.insert(2, "true_dx", part["dx"].to_numpy())
    return preds


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


def metrics_from_predictions(preds: pd.DataFrame, *, threshold: float, n_boot: int, seed: int, prior=None) -> dict:
    """Metrics of a predictions table (with true_dx and lesion_id) of a multiclass or binary model.

    ``prior``: the checkpoint's ``malignant_prior``, under which the class columns become the
    population probabilities whose calibration is measured (:mod:`skinlesion.metrics`)."""
    classes, y, probs = labelled(preds)
    return {
        "n_images": int(len(preds)),
        "n_lesions": int(preds["lesion_id"].nunique()),
        "threshold": threshold,
        "metrics": lesion_bootstrap(
            y,
            probs,
            preds["lesion_id"].to_numpy(),
            p_malignant=preds["p_malignant"].to_numpy(),
            prior=prior,
            threshold=threshold,
            classes=classes,
            n_boot=n_boot,
            seed=seed,
        ),
        "per_class": per_class(y, probs, classes),
    }


def score_predictions(
    val: pd.DataFrame,
    test: pd.DataFrame,
    *,
    prior,
    target_sensitivity: float,
    n_boot: int,
    seed: int,
    metadata: dict | None = None,
    table: pd.DataFrame | None = None,
) -> dict:
    """The scored blocks of one model (a tier, or the ensemble of tiers) from its val and test predictions.

    ``validation``: per-image scores on val, what the protocol compares models on. ``test`` scores
    every test image at the threshold chosen on val; ``test_per_lesion`` every test lesion once
    (:func:`per_lesion`, its threshold chosen on the validation lesions). With ``metadata`` (a
    multiclass model's; ``table``: the split table by image_id) both again with the patient
    metadata fused in (:mod:`skinlesion.metadata`), under ``test_with_metadata`` and
    ``test_with_metadata_per_lesion``."""

    def test_metrics(val: pd.DataFrame, test: pd.DataFrame) -> dict:
        threshold = threshold_for_sensitivity(
            val["true_dx"].isin(MALIGNANT).to_numpy(), val["p_malignant"].to_numpy(), target_sensitivity
        )
        return metrics_from_predictions(test, threshold=threshold, n_boot=n_boot, seed=seed, prior=prior)

    blocks = {
        "class_prior": prior,
        "calibration": CALIBRATION_NOTE if prior else "the model's own probabilities",
        "validation": summary_scores(val),
        "test": test_metrics(val, test),
        "test_per_lesion": test_metrics(per_lesion(val, prior), per_lesion(test, prior)),
    }
    if metadata is not None and not is_binary(val):
        val_meta, test_meta = (with_metadata(p, metadata, table, prior) for p in (val, test))
        blocks["test_with_metadata"] = test_metrics(val_meta, test_meta)
        blocks["test_with_metadata_per_lesion"] = test_metrics(*(per_lesion(p, prior) for p in (val_meta, test_meta)))
    return blocks


def write_result(result: dict, out_metrics) -> None:
    with atomic_path(out_metrics) as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def evaluate_tier(
    ckpt: str,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    out_metrics: str | os.PathLike,
    out_predictions: str | os.PathLike,
    out_val_predictions: str | os.PathLike,
    *,
    tier: str,
    tta: bool = True,
    target_sensitivity: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    metadata_model: str | os.PathLike | None = None,
    provenance: dict | None = None,
) -> dict:
    """The evaluate rule: threshold on val, metrics with lesion-bootstrap CIs on test
    (:func:`score_predictions`); writes the metrics and the val and test predictions."""
    val, model = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="val", tta=tta)
    test, _ = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="test", tta=tta)
    result = {
        "tier": tier,
        "task": "binary" if model.binary else "multiclass",
        "tta": tta,
        "target_sensitivity": target_sensitivity,
        "image_size": model.hparams.image_size,
        **score_predictions(
            val,
            test,
            prior=model.hparams.get("malignant_prior"),
            target_sensitivity=target_sensitivity,
            n_boot=n_boot,
            seed=seed,
            metadata=load_metadata_model(metadata_model) if metadata_model else None,
            table=load_split_table(index_csv, split_csv).set_index("image_id"),
        ),
        "provenance": provenance or {},
    }
    write_csv(val, out_val_predictions)
    write_csv(test, out_predictions)
    write_result(result, out_metrics)
    return result


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


def evaluate_ensemble(
    metrics_jsons: list[str],
    val_predictions: list[str],
    test_predictions: list[str],
    index_csv: str,
    split_csv: str,
    out_metrics: str | os.PathLike,
    out_predictions: str | os.PathLike,
    *,
    target_sensitivity: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    metadata_model: str | os.PathLike | None = None,
    provenance: dict | None = None,
) -> dict:
    """The evaluate_ensemble rule: the mean of the tiers' probabilities, scored like one tier (its
    threshold chosen on val). The tiers must share a task and a class prior (the same imbalance
    remedy on the same training split): probabilities under different priors do not average."""
    results = [json.loads(Path(p).read_text()) for p in metrics_jsons]
    tiers = [r["tier"] for r in results]
    for key in ("task", "class_prior"):
        if len({json.dumps(r[key]) for r in results}) > 1:
            raise ValueError(f"ensemble: the tiers {tiers} differ in {key}; their probabilities cannot be averaged")
    prior = results[0]["class_prior"]
    read = {"dtype": {"image_id": str, "lesion_id": str}}
    val, test = (
        mean_predictions([pd.read_csv(p, **read) for p in paths], prior)
        for paths in (val_predictions, test_predictions)
    )
    result = {
        "tier": "ensemble",
        "members": tiers,
        "task": results[0]["task"],
        "tta": all(r["tta"] for r in results),
        "target_sensitivity": target_sensitivity,
        "image_size": None,
        **score_predictions(
            val,
            test,
            prior=prior,
            target_sensitivity=target_sensitivity,
            n_boot=n_boot,
            seed=seed,
            metadata=load_metadata_model(metadata_model) if metadata_model else None,
            table=load_split_table(index_csv, split_csv).set_index("image_id"),
        ),
        "provenance": provenance or {},
    }
    write_csv(test, out_predictions)
    write_result(result, out_metrics)
    return result


def iter_images(path: str | os.PathLike):
    """(image_id, bytes) for every JPEG/PNG in a folder (recursively) or a zip, sorted by name."""
    import zipfile
    from pathlib import Path

    path = Path(path)
    suffixes = (".jpg", ".jpeg", ".png")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith(suffixes) and "__MACOSX" not in n)
            for name in names:
                yield Path(name).stem, zf.read(name)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes):
            yield file.stem, file.read_bytes()
    else:
        raise FileNotFoundError(f"{path}: neither a folder of images nor a zip archive")


def predict_images(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    out_csv: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    tta: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """``skinlesion predict``: probabilities for a folder or zip of images, preprocessed as in training.

    Each image is centre-cropped and resized to the checkpoint's cache size exactly as the
    preprocess rule did, then resized to the network input size, so the same image gives the
    same probabilities here as in the evaluate rule.
    """
    from tqdm.auto import tqdm

    from skinlesion.preprocess import load_square

    model = load_classifier(checkpoint)
    size = model.hparams.cache_size
    ids, probs, batch = [], [], []

    def flush():
        if batch:
            probs.append(predict_array(model, np.stack(batch), batch_size=batch_size, tta=tta))
            batch.clear()

    for image_id, data in tqdm(iter_images(images), desc="predict", unit="img", disable=not progress):
        try:
            batch.append(load_square(data, size))
        except OSError as exc:
            raise ValueError(f"{images}: cannot decode {image_id}: {exc}") from exc
        ids.append(image_id)
        if len(batch) == batch_size:
            flush()
    flush()
    if not ids:
        raise ValueError(f"{images}: no .jpg/.jpeg/.png images found")
    table = probability_table(model, np.concatenate(probs), ids)
    if out_csv is not None:
        write_csv(table, out_csv)
    return table


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
) -> dict:
    """An external test set, at the operating threshold chosen on the internal validation split.

    The one-hot challenge ground truth carries no lesion ids, so external confidence intervals
    resample images (for either ground-truth form, which therefore give identical metrics).
    """
    gt = read_ground_truth(ground_truth)
    preds = predict_images(checkpoint, images, tta=tta, progress=False)
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
