"""predict, the evaluate rule and the external test set agree with each other."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import SAMPLE, external_test_dir, run_snakemake, sample_args
from skinlesion import CLASSES, MALIGNANT, malignant_probability, population_probabilities
from skinlesion.evaluate.external import evaluate_external, read_ground_truth
from skinlesion.evaluate.metrics import threshold_for_sensitivity
from skinlesion.evaluate.predict import predict_images
from skinlesion.evaluate.predictions import per_lesion
from skinlesion.evaluate.scoring import metrics_from_predictions
from skinlesion.train.module import load_classifier

COLUMNS = ["image_id", *CLASSES, "p_malignant", "dx"]


def test_metrics_json_has_every_reported_metric(sample_run):
    result = json.loads((sample_run / "results" / "metrics" / "resnet.json").read_text())
    metrics = result["test"]["metrics"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "malignant_auroc", "malignant_ap", "sensitivity", "ece"):
        assert {"value", "ci_low", "ci_high"} <= set(metrics[key]), key
        assert metrics[key]["ci_low"] <= metrics[key]["value"] <= metrics[key]["ci_high"], key
    assert set(result["test"]["per_class"]) == set(CLASSES)
    assert 0 < result["test"]["threshold"] <= 1


def test_every_test_lesion_is_also_scored_once(sample_run):
    """The per-lesion blocks score the same test split with one row per lesion, and have rows in the comparison."""
    result = json.loads((sample_run / "results" / "metrics" / "resnet.json").read_text())
    preds = pd.read_csv(sample_run / "results" / "predictions" / "resnet_test.csv")
    for image, lesion in (("test", "test_per_lesion"), ("test_with_metadata", "test_with_metadata_per_lesion")):
        assert result[lesion]["n_images"] == result[lesion]["n_lesions"] == preds["lesion_id"].nunique()
        assert result[image]["n_images"] == len(preds) > result[lesion]["n_images"]
        assert set(result[lesion]["metrics"]) == set(result[image]["metrics"])
    comparison = pd.read_csv(sample_run / "results" / "metrics" / "comparison.csv").set_index("model")
    value = result["test_with_metadata_per_lesion"]["metrics"]["malignant_auroc"]["value"]
    assert comparison.loc["resnet + metadata, per lesion", "malignant_auroc"] == round(value, 4)


def test_the_mean_of_the_tiers_is_scored_like_a_tier(sample_run):
    """metrics/ensemble.json scores the mean of the tiers' class probabilities, its threshold chosen on
    val, with and without metadata, per image and per lesion; each block is a row of the comparison."""
    results = sample_run / "results"
    tiers = ("baseline_cnn", "resnet", "transfer")
    ensemble = json.loads((results / "metrics" / "ensemble.json").read_text())
    assert ensemble["members"] == list(tiers) and ensemble["class_prior"]
    tests = [pd.read_csv(results / "predictions" / f"{t}_test.csv") for t in tiers]
    mean = np.mean([t[list(CLASSES)].to_numpy() for t in tests], axis=0)
    preds = pd.read_csv(results / "predictions" / "ensemble_test.csv")
    np.testing.assert_allclose(preds[list(CLASSES)].to_numpy(), mean, atol=2e-6)
    vals = [pd.read_csv(results / "predictions" / f"{t}_val.csv") for t in tiers]
    val = pd.DataFrame({"true_dx": vals[0]["true_dx"]})
    val["p_malignant"] = malignant_probability(
        np.mean([v[list(CLASSES)].to_numpy() for v in vals], axis=0), ensemble["class_prior"]
    )
    threshold = threshold_for_sensitivity(val["true_dx"].isin(MALIGNANT), val["p_malignant"], 0.95)
    assert ensemble["test"]["threshold"] == pytest.approx(threshold, abs=1e-5)
    comparison = pd.read_csv(results / "metrics" / "comparison.csv").set_index("model")
    name = "mean of baseline_cnn + resnet + transfer"
    for block, row in (("test", name), ("test_with_metadata_per_lesion", f"{name} + metadata, per lesion")):
        value = ensemble[block]["metrics"]["balanced_accuracy"]["value"]
        assert comparison.loc[row, "balanced_accuracy"] == round(value, 4)


def _mel_or_nv(image_ids, lesion_ids, true_dx, p_mel) -> pd.DataFrame:
    preds = pd.DataFrame({"image_id": image_ids, "lesion_id": lesion_ids, "true_dx": true_dx})
    for name in CLASSES:
        preds[name] = 0.0
    preds["mel"], preds["nv"] = p_mel, 1 - np.asarray(p_mel)
    preds["p_malignant"] = preds["mel"]
    preds["dx"] = np.where(preds["mel"] >= 0.5, "mel", "nv")
    return preds


def test_per_lesion_averages_the_images_of_each_lesion():
    """A melanoma photographed twice counts twice per image and once, from its mean, per lesion."""
    preds = _mel_or_nv(list("abcd"), ["L1", "L1", "L2", "L3"], ["mel", "mel", "nv", "nv"], [0.95, 0.75, 0.8, 0.1])
    lesions = per_lesion(preds, prior=None)
    assert list(lesions["lesion_id"]) == ["L1", "L2", "L3"] and lesions.loc[0, "image_id"] == "a b"
    assert lesions.loc[0, "p_malignant"] == pytest.approx(0.85) and lesions.loc[0, "dx"] == "mel"
    auroc = {
        name: metrics_from_predictions(table, threshold=0.5, n_boot=0, seed=0)["metrics"]["malignant_auroc"]["value"]
        for name, table in (("image", preds), ("lesion", lesions))
    }
    assert auroc == {"image": 0.75, "lesion": 1.0}


def test_per_lesion_refuses_a_lesion_with_two_diagnoses():
    preds = _mel_or_nv(["a", "b"], ["HAM_1", "HAM_1"], ["mel", "nv"], [0.9, 0.2])
    with pytest.raises(ValueError, match="lesion_id HAM_1: its images have different true_dx"):
        per_lesion(preds, prior=None)


def test_binary_task_runs_to_the_report(tmp_path):
    """task: binary trains, evaluates (benign vs malignant) and reports, per image and per lesion."""
    run_snakemake(
        tmp_path,
        *sample_args("train={task: binary, tiers: [baseline_cnn], monitor: val/auroc}", "--", "results/report.html"),
    )
    results = tmp_path / "results"
    result = json.loads((results / "metrics" / "baseline_cnn.json").read_text())
    preds = pd.read_csv(results / "predictions" / "baseline_cnn_test.csv")
    assert result["task"] == "binary" and set(preds["dx"]) <= {"benign", "malignant"}
    test = result["test"]
    auroc = roc_auc_score(preds["true_dx"].isin(MALIGNANT), preds["p_malignant"])
    assert test["metrics"]["malignant_auroc"]["value"] == pytest.approx(auroc)
    assert set(test["per_class"]) == {"benign", "malignant"} and "macro_auroc" not in test["metrics"]
    assert test["per_class"]["malignant"]["support"] == preds["true_dx"].isin(MALIGNANT).sum()
    assert result["test_per_lesion"]["n_lesions"] == preds["lesion_id"].nunique()
    comparison = pd.read_csv(results / "metrics" / "comparison.csv").set_index("model")
    assert comparison.loc["baseline_cnn", "malignant_auroc"] == round(auroc, 4)
    assert "baseline_cnn, per lesion" in comparison.index
    assert "benign" in (results / "report.html").read_text()


def test_metadata_fusion_is_reported_beside_the_image_model(sample_run):
    """The same test images, the same metrics, with age/sex/site fused in: a row of its own in the comparison."""
    result = json.loads((sample_run / "results" / "metrics" / "resnet.json").read_text())
    image, fused = result["test"], result["test_with_metadata"]
    assert fused["n_images"] == image["n_images"] and set(fused["metrics"]) == set(image["metrics"])
    assert fused["per_class"] != image["per_class"]
    comparison = pd.read_csv(sample_run / "results" / "metrics" / "comparison.csv").set_index("model")
    for tier in ("baseline_cnn", "resnet", "transfer"):
        tier_result = json.loads((sample_run / "results" / "metrics" / f"{tier}.json").read_text())
        value = tier_result["test_with_metadata"]["metrics"]["balanced_accuracy"]["value"]
        assert comparison.loc[f"{tier} + metadata", "balanced_accuracy"] == round(value, 4)


def test_predict_matches_the_evaluate_rule(sample_run):
    """The CLI on the raw zips gives the evaluate rule's probabilities for the test images, as
    population probabilities: the evaluate rule's columns reweighted by the training prior, their
    malignant sum p_malignant."""
    results = sample_run / "results"
    evaluated = pd.read_csv(results / "predictions" / "resnet_test.csv")
    out = sample_run / "cli_preds.csv"
    for part in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"):
        cmd = [sys.executable, "-m", "skinlesion", "predict", "--checkpoint", str(results / "models/resnet/best.ckpt")]
        cmd += ["--images", str(SAMPLE / part), "--out", str(out.with_suffix(f".{part}.csv")), "--tta"]
        subprocess.run(cmd, check=True, capture_output=True)
    predicted = pd.concat(
        pd.read_csv(out.with_suffix(f".{p}.csv")) for p in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
    )
    assert list(predicted.columns) == COLUMNS
    assert len(predicted) == len(pd.read_csv(SAMPLE / "HAM10000_metadata.csv"))
    merged = evaluated.merge(predicted, on="image_id", suffixes=("_eval", "_cli"))
    assert len(merged) == len(evaluated)
    prior = load_classifier(results / "models/resnet/best.ckpt").hparams.malignant_prior
    evaluated_columns = merged[[f"{c}_eval" for c in CLASSES]].to_numpy()
    cli_columns = merged[[f"{c}_cli" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(population_probabilities(evaluated_columns, prior), cli_columns, atol=2e-6)
    np.testing.assert_allclose(merged["p_malignant_eval"], merged["p_malignant_cli"], atol=2e-6)
    np.testing.assert_allclose(
        cli_columns[:, [CLASSES.index(c) for c in MALIGNANT]].sum(1), merged["p_malignant_cli"], atol=2e-6
    )
    assert np.abs(cli_columns - evaluated_columns).max() > 0.01  # the sample's prior is far from uniform
    assert (merged["dx_eval"] == merged["dx_cli"]).all()
    np.testing.assert_allclose(predicted[list(CLASSES)].sum(axis=1), 1.0, atol=1e-5)


def test_predict_reports_a_bad_path(sample_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder of images nor a zip"):
        predict_images(sample_run / "results/models/resnet/best.ckpt", tmp_path / "missing", progress=False)


def test_one_hot_and_metadata_ground_truth_give_identical_external_metrics(sample_run, tmp_path):
    ckpt = sample_run / "results/models/resnet/best.ckpt"
    internal = sample_run / "results/metrics/resnet.json"
    results = {}
    for form in ("metadata", "onehot"):
        folder = external_test_dir(tmp_path / form, form)
        assert read_ground_truth(folder / "ground_truth.csv").shape == (150, 2)
        out = tmp_path / f"{form}.json"
        evaluate_external(
            str(ckpt),
            str(folder / "images"),
            str(folder / "ground_truth.csv"),
            str(internal),
            out,
            tmp_path / f"{form}.csv",
            tta=False,
            n_boot=50,
            seed=0,
        )
        results[form] = out.read_text()
    assert results["metadata"] == results["onehot"]
    assert json.loads(results["metadata"])["n_images"] == 150


def test_workflow_evaluates_the_external_test_set(sample_run):
    ext = json.loads((sample_run / "results" / "metrics" / "resnet_external.json").read_text())
    assert ext["n_images"] == 150 and ext["bootstrap_unit"] == "image"
    assert "malignant_auroc" in ext["metrics"]


def test_unrecognised_ground_truth_is_named(tmp_path):
    bad = tmp_path / "gt.csv"
    pd.DataFrame({"name": ["a"], "label": ["nv"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="unrecognised ground truth.*found name, label"):
        read_ground_truth(bad)


def test_inference_runs_where_it_is_told_and_auto_is_the_cpu_here(sample_run):
    """device: auto takes the GPU when there is one; on this CPU-only machine it is the CPU, with the
    same predictions to the bit (the GPU check compares a GPU against the CPU within a tolerance)."""
    import torch

    from skinlesion.evaluate.predict import evaluate_split
    from skinlesion.train.module import resolve_device

    data = sample_run / "results" / "data"
    args = (str(sample_run / "results/models/resnet/best.ckpt"), *(str(data / f) for f in ("images.npy", "index.csv")))
    runs = {
        d: evaluate_split(*args, str(data / "split.csv"), split="val", tta=False, device=d) for d in ("cpu", "auto")
    }
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert runs["auto"][1].device.type == resolve_device("auto")
    pd.testing.assert_frame_equal(runs["cpu"][0], runs["auto"][0])
    with pytest.raises(ValueError, match="device: 'tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")
