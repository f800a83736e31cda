"""Model selection by lesion-grouped K-fold cross-validation on the development data (train + val).

``snakemake results/selection/{tier}.csv`` trains the tier's default settings and each variant that
``selection.variants`` lists for it on every fold and scores each on the fold it did not see:

1. ``cv_folds``: the development table's lesions into K folds (scikit-learn's
   ``StratifiedGroupKFold``: grouped by lesion, stratified by diagnosis, seeded), never a test row;
2. ``cv_fold`` (per tier, variant, fold): train on the other K-1 folds (normalisation statistics
   from them too), choose the checkpoint on the held-out fold as training chooses it on val, and
   write the held-out fold's predictions;
3. ``select`` (per tier): per fold and as mean ± sd over the folds, the balanced accuracy and the
   malignant AUROC of each variant, and its paired difference from the default on the same folds.

The held-out fold also picks the best epoch, as val does in a full training, so the numbers are
somewhat optimistic for every variant alike; what selection reads is the paired difference.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.config import ConfigError, check_training, tier_settings
from skinlesion.evaluate.metrics import summary_scores
from skinlesion.io import atomic_path
from skinlesion.tables import development_rows, read_split

log = logging.getLogger(__name__)
DEFAULT = "default"
METRICS = ("balanced_accuracy", "malignant_auroc")


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested blocks (model, augment) key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variant_settings(train_cfg: dict, tier: str, variant: str, variants: dict) -> dict:
    """The resolved training settings of one selection variant: the tier's defaults for ``default``,
    else those with the variant's overrides laid over them."""
    settings = tier_settings(train_cfg, tier)
    if variant != DEFAULT:
        named = variants.get(tier, {})
        if variant not in named:
            raise ConfigError(f"selection.variants.{tier}: no variant {variant!r}; configured: {sorted(named)}")
        settings = deep_merge(settings, named[variant])
    check_training(settings, f"selection.variants.{tier}.{variant}")
    return settings


def make_folds(development_csv: str | os.PathLike, out_csv: str | os.PathLike, *, k: int, seed: int) -> pd.DataFrame:
    """The cv_folds rule: every development image with its fold, 0..k-1 (whole lesions per fold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    dev = development_rows(read_split(development_csv), development_csv).reset_index(drop=True)
    if dev["lesion_id"].nunique() < k:
        raise ValueError(f"{development_csv}: {dev['lesion_id'].nunique()} lesions cannot fill selection.folds: {k}")
    folds = np.full(len(dev), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(dev, dev["dx"], groups=dev["lesion_id"])):
        folds[held_out] = fold
    out = dev[["image_id", "lesion_id", "dx", "malignant"]].assign(fold=folds)
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
    log.info("%d development images in %d folds: %s", len(out), k, np.bincount(folds).tolist())
    return out


def fold_split(folds_csv: str | os.PathLike, fold: int, out_csv: str | os.PathLike) -> pd.DataFrame:
    """A development table for one fold: the fold itself as val, the other folds as train."""
    folds = pd.read_csv(folds_csv, dtype={"image_id": str, "lesion_id": str})
    if fold not in set(folds["fold"]):
        raise ValueError(f"{folds_csv}: no fold {fold}")
    table = folds.drop(columns="fold").assign(split=np.where(folds["fold"] == fold, "val", "train"))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    return table


def cross_validate_fold(
    tier: str,
    *,
    folds_csv: str,
    fold: int,
    images: str,
    index: str,
    settings: dict,
    seed: int,
    tta: bool,
    work_dir: str | os.PathLike,
    out_ckpt: str | os.PathLike,
    out_predictions: str | os.PathLike,
    device: str = "cpu",
) -> pd.DataFrame:
    """The cv_fold rule: train on the other folds, predict the held-out one (its out-of-fold predictions)."""
    from skinlesion.data.split import channel_stats
    from skinlesion.evaluate.predict import predict_rows
    from skinlesion.evaluate.predictions import write_csv
    from skinlesion.tables import load_development_table
    from skinlesion.train.fit import train_tier
    from skinlesion.train.module import load_classifier

    work = Path(work_dir)
    split_csv, stats = work / "split.csv", work / "norm_stats.json"
    fold_split(folds_csv, fold, split_csv)
    channel_stats(images, index, split_csv, stats)
    train_tier(
        tier,
        images=images,
        index=index,
        split=str(split_csv),
        stats=str(stats),
        settings=settings,
        seed=seed,
        out_ckpt=str(out_ckpt),
        out_history=str(work / "history.csv"),
        out_run_id=None,
        work_dir=str(work / "train"),
        mlflow_cfg=None,
    )
    table = load_development_table(index, split_csv)
    preds = predict_rows(load_classifier(out_ckpt, device), images, table[table["split"] == "val"], tta=tta)
    write_csv(preds, out_predictions)
    return preds


def summarise(tier: str, predictions: dict[str, list[str]], out_csv: str | os.PathLike) -> pd.DataFrame:
    """The select rule: one row per variant and fold, then its mean and sd over the folds; the
    ``delta_*`` columns are the paired difference from the default on the same fold."""
    if DEFAULT not in predictions:
        raise ValueError(f"selection of {tier}: no {DEFAULT!r} variant to compare against")
    rows = [
        {"tier": tier, "variant": variant, "fold": str(fold), **summary_scores(pd.read_csv(path))}
        for variant, paths in predictions.items()
        for fold, path in enumerate(paths)
    ]
    table = pd.DataFrame(rows)
    default = table[table["variant"] == DEFAULT].set_index("fold")
    for metric in METRICS:
        table[f"delta_{metric}"] = table[metric] - table["fold"].map(default[metric])
    columns = [*METRICS, *(f"delta_{m}" for m in METRICS)]
    summary = []
    for variant, group in table.groupby("variant", sort=False):
        for name, stat in (("mean", group[columns].mean()), ("sd", group[columns].std(ddof=1))):
            summary.append(
                {"tier": tier, "variant": variant, "fold": name, "n_images": group["n_images"].sum(), **stat}
            )
    out = pd.concat([table, pd.DataFrame(summary)], ignore_index=True)
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
    return out
