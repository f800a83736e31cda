"""Would averaging or stacking the tiers beat the best tier, with or without the patient metadata?

    python benchmarks/ensemble.py --results results [--tiers baseline_cnn resnet transfer]

Reads a finished workflow's checkpoints, cache, test predictions and metadata model
(``results/models/metadata.json``). Stacking is fitted on the validation split only; everything
is scored on the lesion-grouped test split. Prints, for each tier, each mean of tiers'
probabilities and a class-balanced logistic regression over the tiers' log-probabilities, the
test balanced accuracy and malignant-vs-benign AUROC, alone and with the metadata fused in as
the evaluate rule does; and, against that naive-Bayes fusion, the same regression given the
one-hot metadata as further features (a learned fusion). The validation predictions use the
same TTA setting as the evaluation.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from skinlesion import CLASSES, MALIGNANT, malignant_probability
from skinlesion.config import load_config
from skinlesion.datamodule import load_split_table
from skinlesion.evaluate import evaluate_split
from skinlesion.metadata import encode, fuse, load_metadata_model, log_likelihood_ratio


def score(probs: np.ndarray, truth: pd.Series, prior) -> str:
    y = truth.map(CLASSES.index).to_numpy()
    auroc = roc_auc_score(truth.isin(MALIGNANT), malignant_probability(probs, prior))
    return f"{balanced_accuracy_score(y, probs.argmax(1)):.3f} / {auroc:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished workflow's results/")
    parser.add_argument("--tiers", nargs="+", default=["baseline_cnn", "resnet", "transfer"])
    args = parser.parse_args()
    data, tta = args.results / "data", load_config()["evaluate"]["tta"]
    probs, ids, truth = {}, {}, {}
    for tier in args.tiers:
        val, model = evaluate_split(
            str(args.results / "models" / tier / "best.ckpt"),
            *(str(data / f) for f in ("images.npy", "index.csv", "split.csv")),
            split="val",
            tta=tta,
        )
        test = pd.read_csv(args.results / "predictions" / f"{tier}_test.csv")
        prior = model.hparams.get("malignant_prior")  # the same training split for every tier
        for split, table in (("val", val), ("test", test)):
            table = table.sort_values("image_id", ignore_index=True)  # the same row order for every tier
            probs[tier, split] = table[list(CLASSES)].to_numpy()
            ids[split], truth[split] = table["image_id"], table["true_dx"]
    table = load_split_table(data / "index.csv", data / "split.csv").set_index("image_id")
    meta = load_metadata_model(args.results / "models" / "metadata.json")
    test_ratio = log_likelihood_ratio(meta, table.loc[ids["test"]])

    def report(name: str, test_probs: np.ndarray) -> None:
        plain = score(test_probs, truth["test"], prior)
        fused = score(fuse(test_probs, test_ratio), truth["test"], prior)
        print(f"{name:64s} {plain:>15s} {fused:>15s}")

    print(f"{'test: balanced accuracy / malignant AUROC':64s} {'image':>15s} {'+ metadata':>15s}")
    for tier in args.tiers:
        report(tier, probs[tier, "test"])
    for n in range(2, len(args.tiers) + 1):
        for combo in itertools.combinations(args.tiers, n):
            report("mean of " + " + ".join(combo), np.mean([probs[t, "test"] for t in combo], axis=0))
    x = {split: np.hstack([np.log(np.clip(probs[t, split], 1e-6, 1)) for t in args.tiers]) for split in ("val", "test")}
    stack = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    stack.fit(x["val"], truth["val"].map(CLASSES.index))
    report("stack of " + " + ".join(args.tiers), stack.predict_proba(x["test"]))
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(encode(table.query("split == 'train'")))
    x = {split: np.hstack([x[split], onehot.transform(encode(table.loc[ids[split]]))]) for split in x}
    stack.fit(x["val"], truth["val"].map(CLASSES.index))
    learned = score(stack.predict_proba(x["test"]), truth["test"], prior)
    print(f"{'stack of ' + ' + '.join(args.tiers) + ' + metadata features':64s} {'-':>15s} {learned:>15s}")


if __name__ == "__main__":
    main()
