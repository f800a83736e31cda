"""Would averaging the tiers, or stacking them with the patient metadata, beat the best tier?

    python benchmarks/ensemble.py --results results [--tiers baseline_cnn resnet transfer]

Reads a finished workflow's checkpoints, cache and test predictions. Everything is fitted on the
validation split only and scored on the lesion-grouped test split. Prints, for each tier, each
mean of tiers' probabilities, and a class-balanced logistic regression over the tiers'
log-probabilities (with and without age, sex and body site from the raw metadata): the test
balanced accuracy and malignant-vs-benign AUROC. The validation predictions use the same TTA
setting as the workflow's evaluation.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skinlesion import CLASSES, MALIGNANT
from skinlesion.config import load_config
from skinlesion.evaluate import evaluate_split


def score(probs: np.ndarray, truth: pd.Series) -> str:
    y = truth.map(CLASSES.index).to_numpy()
    p_malignant = probs[:, [CLASSES.index(c) for c in MALIGNANT]].sum(1)
    auroc = roc_auc_score(truth.isin(MALIGNANT), p_malignant)
    return f"{balanced_accuracy_score(y, probs.argmax(1)):.3f} / {auroc:.3f}"


def metadata_features(image_ids: pd.Series, meta: pd.DataFrame) -> np.ndarray:
    m = meta.loc[image_ids]
    age = m["age"]
    sites = sorted(meta["localization"].unique())
    return np.hstack(
        [
            age.fillna(meta["age"].median()).to_numpy()[:, None] / 100,
            age.isna().to_numpy()[:, None],
            pd.get_dummies(m["sex"]).reindex(columns=["male", "female", "unknown"], fill_value=0).to_numpy(),
            pd.get_dummies(m["localization"]).reindex(columns=sites, fill_value=0).to_numpy(),
        ]
    ).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished workflow's results/")
    parser.add_argument("--tiers", nargs="+", default=["baseline_cnn", "resnet", "transfer"])
    args = parser.parse_args()
    data, tta = args.results / "data", load_config()["evaluate"]["tta"]
    probs, ids, truth = {}, {}, {}
    for tier in args.tiers:
        val, _ = evaluate_split(
            str(args.results / "models" / tier / "best.ckpt"),
            *(str(data / f) for f in ("images.npy", "index.csv", "split.csv")),
            split="val",
            tta=tta,
        )
        test = pd.read_csv(args.results / "predictions" / f"{tier}_test.csv")
        for split, table in (("val", val), ("test", test)):
            table = table.sort_values("image_id", ignore_index=True)  # the same row order for every tier
            probs[tier, split] = table[list(CLASSES)].to_numpy()
            ids[split], truth[split] = table["image_id"], table["true_dx"]
    meta = pd.read_csv(args.results / "raw" / "HAM10000_metadata.csv").set_index("image_id")

    print(f"{'test: balanced accuracy / malignant AUROC':56s}")
    for tier in args.tiers:
        print(f"{tier:56s} {score(probs[tier, 'test'], truth['test'])}")
    for n in range(2, len(args.tiers) + 1):
        for combo in itertools.combinations(args.tiers, n):
            mean = np.mean([probs[t, "test"] for t in combo], axis=0)
            print(f"{'mean of ' + ' + '.join(combo):56s} {score(mean, truth['test'])}")
    for combo in [args.tiers[:1], args.tiers]:
        for with_meta in (False, True):
            x = {
                split: np.hstack(
                    [np.log(np.clip(probs[t, split], 1e-6, 1)) for t in combo]
                    + ([metadata_features(ids[split], meta)] if with_meta else [])
                )
                for split in ("val", "test")
            }
            stack = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
            stack.fit(x["val"], truth["val"].map(CLASSES.index))
            name = f"stack {' + '.join(combo)}{' + age, sex, site' if with_meta else ''}"
            print(f"{name:56s} {score(stack.predict_proba(x['test']), truth['test'])}")


if __name__ == "__main__":
    main()
