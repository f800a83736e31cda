"""The evaluate rules: metrics with lesion-bootstrap CIs of a tier, or of the mean of the tiers, on the test
split at the threshold chosen on val (pandas and scikit-learn; the inference itself is in predict)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from skinlesion import MALIGNANT
from skinlesion.evaluate.metrics import (
    is_binary,
    labelled,
    lesion_bootstrap,
    per_class,
    summary_scores,
    threshold_for_sensitivity,
)
from skinlesion.evaluate.predictions import mean_predictions, per_lesion, with_metadata, write_csv
from skinlesion.io import atomic_path
from skinlesion.tables import load_split_table, record_test_scoring
from skinlesion.train.metadata import load_metadata_model

CALIBRATION_NOTE = "population probabilities: the class columns reweighted by the training split's class frequencies"


def metrics_from_predictions(preds: pd.DataFrame, *, threshold: float, n_boot: int, seed: int, prior=None) -> dict:
    """Metrics of a predictions table (with true_dx and lesion_id) of a multiclass or binary model.

    ``prior``: the checkpoint's ``malignant_prior``, under which the class columns become the
    population probabilities whose calibration is measured (:mod:`skinlesion.evaluate.metrics`)."""
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
    metadata_model: str | os.PathLike | None = None,
    split_tables: tuple[str, str] | None = None,
) -> dict:
    """The scored blocks of one model (a tier, or the ensemble of tiers) from its val and test predictions.

    ``validation``: per-image scores on val, what the protocol compares models on. ``test`` scores
    every test image at the threshold chosen on val; ``test_per_lesion`` every test lesion once
    (:func:`per_lesion`, its threshold chosen on the validation lesions). With ``metadata_model`` (for
    a multiclass model; ``split_tables``: the index and split tables its features come from) both
    again with the patient metadata fused in (:mod:`skinlesion.train.metadata`), under
    ``test_with_metadata`` and ``test_with_metadata_per_lesion``."""

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
    if metadata_model and not is_binary(val):
        metadata = load_metadata_model(metadata_model)
        table = load_split_table(*split_tables).set_index("image_id")
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
    device: str = "cpu",
    ledger: str | os.PathLike | None = None,
) -> dict:
    """The evaluate rule (inference on ``device``): threshold on val, metrics with lesion-bootstrap CIs on test
    (:func:`score_predictions`); writes the metrics and the val and test predictions, and a line to the
    test split's ``ledger``."""
    from skinlesion.evaluate.predict import evaluate_split

    val, model = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="val", tta=tta, device=device)
    test, _ = evaluate_split(ckpt, images_npy, index_csv, split_csv, split="test", tta=tta, device=device)
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
            metadata_model=metadata_model,
            split_tables=(index_csv, split_csv),
        ),
        "provenance": provenance or {},
    }
    write_csv(val, out_val_predictions)
    write_csv(test, out_predictions)
    write_result(result, out_metrics)
    blocks = ", ".join(b for b in result if b.startswith("test"))
    record_test_scoring(ledger, f"evaluate {tier} ({'8-fold TTA' if tta else 'no TTA'}): {blocks}", provenance)
    return result


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
    ledger: str | os.PathLike | None = None,
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
            metadata_model=metadata_model,
            split_tables=(index_csv, split_csv),
        ),
        "provenance": provenance or {},
    }
    write_csv(test, out_predictions)
    write_result(result, out_metrics)
    blocks = ", ".join(b for b in result if b.startswith("test"))
    record_test_scoring(ledger, f"evaluate_ensemble (mean of {' + '.join(tiers)}): {blocks}", provenance)
    return result
