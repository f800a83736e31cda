"""Inference on the cache and on image files: class probabilities per image, with optional TTA."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from skinlesion import CLASSES, population_probabilities
from skinlesion.evaluate.predictions import set_binary_probability, set_class_probabilities, write_csv
from skinlesion.tables import load_split_table
from skinlesion.train.module import LesionClassifier, load_classifier


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
        # p_malignant in the population (the training prior); dx the balanced decision, at 0.5 before it.
        set_binary_probability(table, population_probabilities(probs, model.hparams.get("malignant_prior"))[:, 1])
        table["dx"] = np.where(probs[:, 1] >= 0.5, "malignant", "benign")
    else:
        set_class_probabilities(table, probs, model.hparams.get("malignant_prior"))
    return table


def evaluate_split(
    ckpt: str,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    *,
    split: str,
    tta: bool,
    batch_size: int = 128,
    device: str = "cpu",
) -> tuple[pd.DataFrame, LesionClassifier]:
    """Predictions for one split of the cache, joined with the truth (dx, lesion_id), on ``device``."""
    model = load_classifier(ckpt, device)
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


def iter_images(path: str | os.PathLike):
    """(image_id, bytes) for every JPEG/PNG in a folder (recursively) or a zip, sorted by name."""
    import zipfile

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
    device: str = "cpu",
    population: bool = True,
) -> pd.DataFrame:
    """``skinlesion predict``: probabilities for a folder or zip of images, preprocessed as in training.

    Each image is centre-cropped and resized to the checkpoint's cache size exactly as the
    preprocess rule did, then resized to the network input size, so the same image gives the
    same probabilities here as in the evaluate rule. ``population``: the class columns are the
    population probabilities (reweighted by the training prior, as the service returns them; their
    malignant sum is p_malignant), else the network's own columns, as the evaluate rules keep them.
    dx is the balanced decision either way.
    """
    from tqdm.auto import tqdm

    from skinlesion.data.preprocess import load_square

    model = load_classifier(checkpoint, device)
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
    probs = np.concatenate(probs)
    table = probability_table(model, probs, ids)
    if population and not model.binary:
        table[list(CLASSES)] = population_probabilities(probs, model.hparams.get("malignant_prior"))
    if out_csv is not None:
        write_csv(table, out_csv)
    return table
