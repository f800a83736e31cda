"""Model selection by lesion-grouped K-fold cross-validation on the development data (train + val).

``snakemake --cores 2 results/selection/{tier}.csv`` trains the tier's default settings and each
variant that ``selection.variants`` lists for it on every fold and scores each on the fold it did
not see:

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

# The variants' settings are plain dicts, resolved in skinlesion.config, which the Snakefile
# imports without this module's numerical libraries; re-exported here.
from skinlesion.config import DEFAULT, deep_merge, variant_settings  # noqa: F401
from skinlesion.evaluate.metrics import summary_scores
from skinlesion.io import atomic_path
from skinlesion.tables import development_rows, read_split

log = logging.getLogger(__name__)
METRICS = ("balanced_accuracy", "malignant_auroc")
# The adoption rule's one-sided level on the balanced accuracy difference (see :func:`adopt`).
ALPHA = 0.10


def adopt(delta_bal: tuple[float, float], delta_auroc: tuple[float, float], k: int) -> bool:
    """The selection rule (docs/evaluation.md): a variant replaces the default only if a one-sided
    paired t-test over the ``k`` folds finds its balanced accuracy higher at level :data:`ALPHA`
    (mean difference > t(1 - ALPHA, k - 1) standard errors) and its malignant AUROC does not fall by
    more than one standard error. Arguments: (mean, sd) of the per-fold paired differences."""
    from scipy.stats import t

    (bal, bal_sd), (auroc, auroc_sd) = delta_bal, delta_auroc
    se_bal, se_auroc = bal_sd / np.sqrt(k), auroc_sd / np.sqrt(k)
    return bool(bal > t.ppf(1 - ALPHA, k - 1) * se_bal and auroc >= -se_auroc)


def false_adoption_rate(k: int) -> float:
    """How often :func:`adopt` takes a variant that changes neither metric, its fold differences
    normal and independent: ALPHA times P(t(k - 1) >= -1) (0.079 for 3 folds; the former rule, one
    standard error on each metric, took one such variant in six)."""
    from scipy.stats import t

    return float(ALPHA * t.cdf(1.0, k - 1))


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
    ``delta_*`` columns are the paired difference from the default on the same fold, and on the mean
    rows ``adopted`` says whether the variant replaces the default (:func:`adopt`, its
    ``false_adoption_rate`` beside it)."""
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
    k = len(default)
    stat = out[out["fold"].isin(["mean", "sd"])].set_index(["variant", "fold"])
    mean = out["fold"] == "mean"

    def deltas(variant: str) -> list[tuple[float, float]]:
        return [(stat.loc[(variant, "mean"), f"delta_{m}"], stat.loc[(variant, "sd"), f"delta_{m}"]) for m in METRICS]

    out.loc[mean, "adopted"] = [v != DEFAULT and adopt(*deltas(v), k) for v in out.loc[mean, "variant"]]
    out.loc[mean, "false_adoption_rate"] = false_adoption_rate(k)
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
    return out
