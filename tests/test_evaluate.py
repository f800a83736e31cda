"""predict, the evaluate rule and the external test set agree with each other."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE, external_test_dir
from skinlesion import CLASSES
from skinlesion.evaluate import evaluate_external, predict_images, read_ground_truth

COLUMNS = ["image_id", *CLASSES, "p_malignant", "dx"]


def test_metrics_json_has_every_reported_metric(sample_run):
    result = json.loads((sample_run / "results" / "metrics" / "resnet.json").read_text())
    metrics = result["test"]["metrics"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "malignant_auroc", "malignant_ap", "sensitivity", "ece"):
        assert {"value", "ci_low", "ci_high"} <= set(metrics[key]), key
        assert metrics[key]["ci_low"] <= metrics[key]["value"] <= metrics[key]["ci_high"], key
    assert set(result["test"]["per_class"]) == set(CLASSES)
    assert 0 < result["test"]["threshold"] <= 1


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
    """The CLI on the raw zips gives the evaluate rule's probabilities for the test images."""
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
    for column in (*CLASSES, "p_malignant"):
        np.testing.assert_allclose(merged[f"{column}_eval"], merged[f"{column}_cli"], atol=2e-6)
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
