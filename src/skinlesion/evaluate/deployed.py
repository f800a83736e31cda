"""The evaluate_deployed rule: the exported model scored exactly as the service runs it.

ONNX Runtime on the CPU, the contract's preprocessing (:func:`skinlesion.serve.inference.to_input` of
the cached square, which is the service's decode), no test-time augmentation, the fitted temperature
and the contract's own operating threshold (chosen on val at export), for the fp32 file and, when
exported, the int8 one; on the test split and, when configured, on the external test set. Its
blocks sit beside the evaluate rule's (8-fold TTA, temperature 1, its own threshold) in the comparison,
the report and the README, so what is shipped is what is scored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.evaluate.external import read_ground_truth
from skinlesion.evaluate.predictions import set_binary_probability, set_class_probabilities, write_csv
from skinlesion.evaluate.scoring import metrics_from_predictions, write_result
from skinlesion.serve.guard import REASONS
from skinlesion.serve.inference import PRECISIONS, OnnxClassifier, Upload, decode, to_input
from skinlesion.tables import load_split_table, record_test_scoring

BATCH = 256


def deployed_table(clf: OnnxClassifier, probs: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    """A predictions table (image_id, lesion_id, true_dx, class columns, p_malignant, dx) of the
    deployed probabilities, in the evaluate rule's convention: the class columns are the uniform-prior
    ones (whose argmax is the deployed predicted class), p_malignant is the deployed one, and the
    contract's class prior turns the columns back into exactly what the service returns."""
    out = frame[["image_id", "lesion_id", "true_dx"]].reset_index(drop=True)
    if clf.contract["task"] == "binary":
        set_binary_probability(out, clf.p_malignant(probs))
        out["dx"] = np.where(clf.decisions(probs) == 1, "malignant", "benign")
        return out
    prior = clf.class_prior
    balanced = probs if prior is None else probs / np.asarray(prior)
    set_class_probabilities(out, balanced / balanced.sum(axis=1, keepdims=True), prior)
    out["p_malignant"] = clf.p_malignant(probs)
    out["dx"] = np.asarray(CLASSES)[clf.decisions(probs)]
    return out


def _outputs(clf: OnnxClassifier, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, ood scores) of cache squares, in batches."""
    parts = [
        clf.outputs(np.stack([to_input(sq, clf.input_size) for sq in squares[i : i + BATCH]]))
        for i in range(0, len(squares), BATCH)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def guard_figures(clf: OnnxClassifier, squares: np.ndarray, ood: np.ndarray) -> dict:
    """The input guard on a set of in-distribution images: the share it accepts and, per reason, the
    share it refuses for that reason (the upload size is unknown for cache squares: no too_small)."""
    reasons = [clf.reasons(Upload("", sq), score) for sq, score in zip(squares, ood.tolist(), strict=True)]
    return {
        "images": len(reasons),
        "accepted": float(np.mean([not r for r in reasons])),
        "refused_by_reason": {k: float(np.mean([k in r for r in reasons])) for k in REASONS if k != "too_small"},
    }


def external_squares(images: str, ground_truth: str, cache_size: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The external set's ground truth and its images decoded as the service decodes an upload."""
    from skinlesion.evaluate.predict import iter_images

    gt = read_ground_truth(ground_truth)
    wanted = set(gt["image_id"])
    decoded = {i: decode(i, data, size=cache_size, max_pixels=10**9) for i, data in iter_images(images) if i in wanted}
    missing = sorted(wanted - set(decoded))
    if missing:
        raise ValueError(f"{images}: no image for {len(missing)} ground-truth row(s), e.g. {missing[:5]}")
    gt = gt.assign(lesion_id=gt["image_id"])  # the challenge's truth has no lesion ids: resample images
    return gt, np.stack([decoded[i] for i in gt["image_id"]])


def evaluate_deployed(
    model_dir: str | os.PathLike,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    out_metrics: str | os.PathLike,
    out_predictions: str | os.PathLike,
    *,
    tier: str,
    n_boot: int,
    seed: int,
    external: dict | None = None,
    provenance: dict | None = None,
    ledger: str | os.PathLike | None = None,
) -> dict:
    """Score the export in ``model_dir`` on the test split (lesion bootstrap) and on ``external``
    ({images, ground_truth}; image bootstrap); writes the metrics and the fp32 test predictions."""
    contract = json.loads((Path(model_dir) / "model.json").read_text())
    table = load_split_table(index_csv, split_csv)
    test = table[table["split"] == "test"].sort_values("row").rename(columns={"dx": "true_dx"})
    cache = np.load(images_npy, mmap_mode="r")
    squares = np.asarray(cache[test["row"].to_numpy()])
    ext = None
    if external:
        ext = external_squares(external["images"], external["ground_truth"], contract["preprocess"]["cache_size"])
    result = {
        "tier": tier,
        "tta": False,
        "temperature": contract["temperature"],
        "class_prior": contract["class_prior"],
    }
    result["onnx"] = {}
    for precision in PRECISIONS:
        if precision == "int8" and "int8" not in contract:
            continue
        clf = OnnxClassifier(model_dir, precision=precision)

        def score(frame: pd.DataFrame, inputs: np.ndarray, clf=clf) -> tuple[pd.DataFrame, dict]:
            probs, ood = _outputs(clf, inputs)
            preds = deployed_table(clf, probs, frame)
            metrics = metrics_from_predictions(
                preds, threshold=clf.threshold, n_boot=n_boot, seed=seed, prior=clf.class_prior
            )
            return preds, metrics | {"guard": guard_figures(clf, inputs, ood)}

        preds, blocks = score(test, squares)
        result["onnx"][precision] = {"model_version": clf.version, "test": blocks}
        if ext is not None:
            result["onnx"][precision]["external"] = score(*ext)[1] | {"bootstrap_unit": "image"}
        if precision == "fp32":
            write_csv(preds, out_predictions)
    result["provenance"] = provenance or {}
    write_result(result, out_metrics)
    scored = f"evaluate_deployed {tier} (ONNX {' and '.join(result['onnx'])}, no TTA): test"
    record_test_scoring(ledger, scored + (", external" if ext is not None else ""), provenance)
    return result
