"""Evaluation metrics with lesion-level bootstrap confidence intervals.

Every number the report shows comes from here: accuracy, balanced multi-class accuracy (the
ISIC 2018 Task 3 ranking metric: mean per-class recall), macro F1, per-class precision /
recall / F1 / AUROC, macro AUROC, malignant-vs-benign AUROC and average precision,
sensitivity and specificity at a threshold chosen on the validation split, and expected
calibration error. Calibration (ECE, the reliability diagram) is measured on the probabilities
the product reports: the population probabilities (:func:`skinlesion.population_probabilities`),
which for a model trained under a uniform class prior are its class columns reweighted by the
training split's class frequencies, the same probabilities p_malignant is summed from.

Confidence intervals resample *lesions* (all images of a drawn lesion come along), since images
of one lesion are not independent, within each diagnosis (stratified by the lesion's class), so every
resample holds every class the data holds and balanced accuracy always averages over the same classes.
Intervals are percentile intervals, except the calibration error's: a binned ECE is biased upwards,
more so in a resample (duplicates), so its percentile interval can exclude the estimate itself; it is
reported bias-corrected (``2 * ECE - mean of the resamples' ECEs``, at least 0) with the basic
bootstrap interval around it, and the plug-in value beside them. A binary model's metrics are the same
with its two classes, benign and malignant, in place of the seven diagnoses.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from skinlesion import CLASSES, MALIGNANT, population_probabilities

MALIGNANT_IDX = [CLASSES.index(c) for c in MALIGNANT]
BINARY_CLASSES = ("benign", "malignant")


def is_binary(preds) -> bool:
    """Whether a predictions table is a binary model's: its dx is only ever benign or malignant."""
    return set(preds["dx"]) <= set(BINARY_CLASSES)


def labelled(preds) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(class names, true class indices, (N, C) probabilities) of a predictions table.

    A multiclass model's table has a probability column per diagnosis. A binary model's has only
    p_malignant (its diagnosis columns are empty and dx is benign or malignant), so its classes are
    benign and malignant and the truth is whether true_dx is mel, bcc or akiec.
    """
    if is_binary(preds):
        p = preds["p_malignant"].to_numpy(dtype=float)
        return BINARY_CLASSES, preds["true_dx"].isin(MALIGNANT).to_numpy().astype(int), np.column_stack([1 - p, p])
    unknown = sorted(set(preds["true_dx"]) - set(CLASSES))
    if unknown:
        raise ValueError(f"true_dx: unknown diagnoses {unknown}")
    return CLASSES, preds["true_dx"].map(CLASSES.index).to_numpy(), preds[list(CLASSES)].to_numpy(dtype=float)


def summary_scores(preds) -> dict[str, float]:
    """Per-image balanced accuracy and malignant AUROC of a predictions table (no bootstrap): what
    model selection compares, on cross-validation folds and on the validation split."""
    _, y, probs = labelled(preds)
    scores = decision_scores(y, probs.argmax(axis=1), preds["true_dx"].isin(MALIGNANT), preds["p_malignant"])
    return {"n_images": len(preds)} | scores


def decision_scores(y, decisions, y_malignant, p_malignant) -> dict[str, float]:
    """Balanced accuracy of class decisions and malignant AUROC of p_malignant (no bootstrap)."""
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, decisions)),
        "malignant_auroc": float(roc_auc_score(y_malignant, p_malignant)),
    }


def recommended_tier(results: dict[str, dict]) -> str:
    """The tier the protocol recommends among evaluated ones (``{tier: metrics JSON}``): the highest
    validation balanced accuracy, the metric that also picks each tier's checkpoint, or for binary
    models the validation malignant AUROC. Never a test number (docs/evaluation.md)."""
    key = "malignant_auroc" if all(r["task"] == "binary" for r in results.values()) else "balanced_accuracy"
    return max(results, key=lambda tier: results[tier]["validation"][key])


def malignant_indices(classes) -> list[int]:
    """Which of ``classes`` count as malignant: mel, bcc and akiec, or the binary malignant class."""
    return [i for i, c in enumerate(classes) if c in MALIGNANT or c == "malignant"]


def threshold_for_sensitivity(y_malignant: np.ndarray, p_malignant: np.ndarray, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity (p >= threshold counts as malignant) reaches ``target``.

    Every distinct score is a candidate (``drop_intermediate=False``): the default drops collinear
    ROC points, which can skip the answer and return a lower threshold."""
    y = np.asarray(y_malignant).astype(bool)
    if not y.any() or y.all():
        raise ValueError("choosing a threshold needs both malignant and benign cases")
    fpr, tpr, thresholds = roc_curve(y, p_malignant, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return float(min(thresholds[ok[0]], 1.0))


def sens_spec(y_malignant: np.ndarray, p_malignant: np.ndarray, threshold: float) -> tuple[float, float]:
    y = np.asarray(y_malignant).astype(bool)
    pred = np.asarray(p_malignant) >= threshold
    return float((pred & y).sum() / y.sum()), float((~pred & ~y).sum() / (~y).sum())


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def reliability_bins(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    acc = np.array([correct[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    mean_conf = np.array([conf[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    return {"edges": edges, "count": counts, "accuracy": acc, "confidence": mean_conf}


def _point_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    p_mal: np.ndarray,
    threshold: float | None,
    malignant: list[int] = MALIGNANT_IDX,
    calibrated: np.ndarray | None = None,
) -> dict[str, float]:
    """Scalar metrics of one (re)sample. ``y`` are class indices, ``probs`` is (N, C), ``malignant``
    the malignant classes' indices, ``calibrated`` the population probabilities whose calibration
    is measured (default ``probs``). Macro AUROC is left out for two classes (it is the malignant AUROC)."""
    pred = probs.argmax(axis=1)
    labels = np.arange(probs.shape[1])
    y_mal = np.isin(y, malignant)
    out = {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "ece": expected_calibration_error(y, probs if calibrated is None else calibrated),
    }
    present = np.unique(y)
    if len(present) == len(labels) > 2:
        out["macro_auroc"] = float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels))
    if 0 < y_mal.sum() < len(y_mal):
        out["malignant_auroc"] = float(roc_auc_score(y_mal, p_mal))
        out["malignant_ap"] = float(average_precision_score(y_mal, p_mal))
        if threshold is not None:
            out["sensitivity"], out["specificity"] = sens_spec(y_mal, p_mal, threshold)
    return out


def per_class(y: np.ndarray, probs: np.ndarray, classes=CLASSES) -> dict[str, dict[str, float]]:
    pred = probs.argmax(axis=1)
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {}
    for i, name in enumerate(classes):
        positive = y == i
        auroc = float(roc_auc_score(positive, probs[:, i])) if 0 < positive.sum() < len(y) else None
        out[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "auroc": auroc,
            "support": int(support[i]),
        }
    return out


def lesion_bootstrap(
    y: np.ndarray,
    probs: np.ndarray,
    lesion_ids: np.ndarray,
    *,
    threshold: float | None,
    p_malignant: np.ndarray | None = None,
    prior=None,
    classes=CLASSES,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Point estimate and 95 % CI of every scalar metric, resampling lesions with replacement within
    each class (see the module docstring; the ECE is bias-corrected).

    ``classes`` names the columns of ``probs``: the seven diagnoses or benign and malignant.
    ``prior``: the class frequencies that turn ``probs`` into population probabilities for the
    calibration error (see the module docstring); None where ``probs`` already are.
    ``p_malignant`` defaults to the malignant classes' summed population probability."""
    y, probs, lesion_ids = np.asarray(y), np.asarray(probs), np.asarray(lesion_ids)
    malignant = malignant_indices(classes)
    calibrated = population_probabilities(probs, prior)
    p_mal = calibrated[:, malignant].sum(axis=1) if p_malignant is None else np.asarray(p_malignant, dtype=float)
    point = _point_metrics(y, probs, p_mal, threshold, malignant, calibrated)
    first, inverse = np.unique(lesion_ids, return_index=True, return_inverse=True)[1:]
    members = [np.flatnonzero(inverse == k) for k in range(len(first))]
    strata = [np.flatnonzero(y[first] == c) for c in np.unique(y[first])]  # lesions by their class
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(stratum, len(stratum)) for stratum in strata])
        idx = np.concatenate([members[k] for k in chosen])
        for key, value in _point_metrics(y[idx], probs[idx], p_mal[idx], threshold, malignant, calibrated[idx]).items():
            draws[key].append(value)
    alpha = (1 - level) / 2
    result = {}
    for key, value in point.items():
        values = np.asarray(draws[key])
        lo, hi = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan)
        entry = {"value": value, "ci_low": float(lo), "ci_high": float(hi), "n_boot": int(len(values))}
        if key == "ece" and len(values):
            entry = {
                "value": max(0.0, 2 * value - float(values.mean())),
                "ci_low": max(0.0, 2 * value - float(hi)),
                "ci_high": max(0.0, 2 * value - float(lo)),
                "n_boot": int(len(values)),
                "plug_in": value,
                "interval": "bias-corrected, basic bootstrap",
            }
        result[key] = entry
    return result
