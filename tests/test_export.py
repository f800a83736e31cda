"""The export rule: ONNX files that agree with PyTorch, and a sidecar that is a usable contract."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2

from conftest import FULLRES, ROOT, need
from skinlesion import MALIGNANT
from skinlesion.evaluate.metrics import sens_spec
from skinlesion.io import sha256sum as sha256
from skinlesion.rendered import inference
from skinlesion.serve.export import Deployed, export_tier, fit_temperature, weights_sha256
from skinlesion.serve.inference import OnnxClassifier, decode, to_input
from skinlesion.tables import load_development_table
from skinlesion.train.module import load_classifier

TIERS = ["baseline_cnn", "resnet", "transfer"]


def fullres_images(n: int = 7) -> list[tuple[str, bytes]]:
    """600x450 HAM10000 JPEGs: the size a user uploads, not the cached 200x150 ones."""
    return [(p.name, p.read_bytes()) for p in sorted(need(FULLRES).glob("*.jpg"))[:n]]


@pytest.mark.parametrize("tier", TIERS)
def test_onnx_runtime_agrees_with_pytorch_for_any_batch_size(sample_run, tier):
    export = sample_run / "results" / "export" / tier
    contract = json.loads((export / "model.json").read_text())
    clf = OnnxClassifier(export)
    model = load_classifier(sample_run / contract["checkpoint"])
    deployed = Deployed(model, contract["temperature"], contract["class_prior"]).eval()
    squares = [decode(n, d, size=clf.cache_size, max_pixels=10**8) for n, d in fullres_images()]
    batch = np.stack([to_input(sq, clf.input_size) for sq in squares])
    with torch.no_grad():
        expected = deployed(torch.from_numpy(batch))[1].numpy()
    for size in (1, 3, 7):  # dynamic batch axis
        np.testing.assert_allclose(clf.probabilities(batch[:size]), expected[:size], atol=1e-4, rtol=0)
    assert np.allclose(expected.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("tier", TIERS)
def test_sidecar_is_the_inference_contract(sample_run, tier):
    export = sample_run / "results" / "export" / tier
    c = json.loads((export / "model.json").read_text())
    assert c["onnx_sha256"] == sha256(export / "model.onnx")
    assert c["weights_sha256"] == weights_sha256(load_classifier(sample_run / c["checkpoint"]))
    assert c["class_names"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert c["malignant_classes"] == list(MALIGNANT)
    # Trained with the class-balanced sampler: p_malignant is reweighted by the training frequencies.
    train = pd.read_csv(sample_run / "results" / "data" / "split.csv").query("split == 'train'")
    assert c["class_prior"] == pytest.approx(train["dx"].value_counts(normalize=True)[c["class_names"]].tolist())
    assert c["probabilities"].startswith("population")
    assert c["input"]["size"] == 32 and c["preprocess"]["cache_size"] == 128  # profiles/sample/sample.yaml
    assert len(c["normalisation"]["mean"]) == 3 and c["temperature"] > 0
    assert c["parity"]["max_abs_diff"] < 1e-4
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", c["provenance"]["git_commit"])
    assert c["provenance"]["packages"]["onnxruntime"] and c["provenance"]["data_checksums"]

    # The operating threshold reaches the target sensitivity on val for the deployed model's probabilities.
    data = sample_run / "results" / "data"
    table = load_development_table(data / "index.csv", data / "development.csv")
    val = table[table["split"] == "val"]
    cache = np.load(data / "images.npy", mmap_mode="r")
    clf = OnnxClassifier(export)
    probs = clf.probabilities(np.stack([to_input(np.asarray(cache[r]), clf.input_size) for r in val["row"]]))
    p_malignant = clf.p_malignant(probs)
    sensitivity, _ = sens_spec(val["malignant"].to_numpy(), p_malignant, c["operating_threshold"])
    assert sensitivity >= c["threshold_selection"]["target_sensitivity"]
    assert sensitivity == pytest.approx(c["threshold_selection"]["sensitivity"])


@pytest.mark.parametrize("tier", ["baseline_cnn", "transfer"])
def test_the_onnx_file_names_no_path_of_the_checkout(sample_run, tier):
    """The exported bytes depend on the model, not on where the project was checked out: a rerun in
    another folder or in the container image gives the same file (tests/test_container.py)."""
    onnx_bytes = (sample_run / "results" / "export" / tier / "model.onnx").read_bytes()
    assert str(ROOT).encode() not in onnx_bytes and b"skinlesion/train/module.py" not in onnx_bytes


def test_deployed_preprocessing_gives_the_evaluate_rules_pixels(sample_run):
    cache = np.load(sample_run / "results" / "data" / "images.npy", mmap_mode="r")[:64]
    squares = np.array(cache)
    expected = v2.Resize((32, 32), antialias=True)(torch.from_numpy(squares).permute(0, 3, 1, 2)).numpy()
    got = np.stack([to_input(sq, 32) for sq in squares])
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_temperature_scaling_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 7, generator=generator) * 3
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    assert fit_temperature(true_logits * 2.5, labels) == pytest.approx(2.5, rel=0.1)


def test_export_refuses_a_model_that_onnx_runtime_does_not_reproduce(sample_run, tmp_path):
    data = sample_run / "results" / "data"
    args = [data / "images.npy", data / "index.csv", data / "development.csv", tmp_path / "m.onnx", tmp_path / "m.json"]
    with pytest.raises(RuntimeError, match="ONNX Runtime and PyTorch differ"):
        export_tier(str(sample_run / "results/models/baseline_cnn/best.ckpt"), *args, tier="x", tolerance=1e-15)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_torch_load_is_always_weights_only():
    calls = [
        (path.relative_to(ROOT), line.strip())
        for path in [*ROOT.glob("src/skinlesion/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]
        for line in path.read_text().splitlines()
        if re.search(r"torch\.load\(|load_from_checkpoint\(", line)
    ]
    assert calls, "the search finds the loaders"
    assert all("weights_only=True" in line for _, line in calls), calls


def val_inputs(sample_run, clf: OnnxClassifier) -> tuple[pd.DataFrame, np.ndarray]:
    data = sample_run / "results" / "data"
    table = load_development_table(data / "index.csv", data / "development.csv")
    val = table[table["split"] == "val"]
    cache = np.load(data / "images.npy", mmap_mode="r")
    return val, np.stack([to_input(np.asarray(cache[r]), clf.input_size) for r in val["row"]])


@pytest.fixture(scope="module")
def int8_run(sample_run, tmp_path_factory) -> Path:
    """A run folder (the sample run's data and models) whose resnet export has an int8 model."""
    run = tmp_path_factory.mktemp("int8_run")
    (run / "results").mkdir()
    for part in ("data", "models"):
        (run / "results" / part).symlink_to(sample_run / "results" / part)
    data, export = run / "results" / "data", run / "results" / "export" / "resnet"
    export_tier(
        str(sample_run / "results/models/resnet/best.ckpt"),
        *(data / f for f in ("images.npy", "index.csv", "development.csv")),
        export / "model.onnx",
        export / "model.json",
        tier="resnet",
        out_int8=export / "model.int8.onnx",
        calibration_images=64,
    )
    return run


def test_int8_export_states_what_quantization_changes_on_validation(sample_run, int8_run):
    import onnx
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    export = int8_run / "results" / "export" / "resnet"
    contract = json.loads((export / "model.json").read_text())
    int8 = contract["int8"]
    assert int8["onnx_sha256"] == sha256(export / "model.int8.onnx")
    assert int8["calibration"] == {"split": "train", "images": 64, "method": "min-max", "format": "QDQ"}
    graph = onnx.load(export / "model.int8.onnx").graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    # The probabilities are computed in float, by a Softmax after the last dequantization.
    assert [n.op_type for n in graph.node if "probabilities" in n.output] == ["Softmax"]

    # The stated validation scores are those of each model's own probabilities, at its own threshold.
    for precision in ("fp32", "int8"):
        clf = OnnxClassifier(export, precision=precision)
        val, x = val_inputs(sample_run, clf)
        probs = clf.probabilities(x)
        p_malignant = clf.p_malignant(probs)
        y = val["dx"].map(clf.class_names.index).to_numpy()
        scores = int8["validation"][precision]
        assert balanced_accuracy_score(y, clf.decisions(probs)) == pytest.approx(scores["balanced_accuracy"])
        assert roc_auc_score(val["malignant"], p_malignant) == pytest.approx(scores["malignant_auroc"])
        sensitivity, _ = sens_spec(val["malignant"].to_numpy(), p_malignant, clf.threshold)
        assert sensitivity >= contract["threshold_selection"]["target_sensitivity"]
    assert clf.threshold == int8["operating_threshold"] and "int8" in clf.version
    assert 0 < int8["validation"]["max_abs_diff"] < 1  # quantized, so not identical, but the same model


def test_int8_needs_an_export_made_with_quantize(sample_run):
    with pytest.raises(ValueError, match=r"model\.json: no int8 model"):
        OnnxClassifier(sample_run / "results" / "export" / "resnet", precision="int8")


def test_inference_benchmark_writes_a_results_file_the_docs_render(int8_run, tmp_path):
    out = tmp_path / "inference.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "inference.py"),
        "--run-dir",
        str(int8_run),
        "--tiers",
        "resnet",
    ]
    subprocess.run([*command, "--batch", "8", "--repeats", "2", "--single", "3", "--out", str(out)], check=True)
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert record["kind"] == "inference" and record["threads"] == 2 and row["images"] == 8
    assert row["onnx_max_abs_diff"] < 1e-4  # the fp32 export reproduces eager PyTorch
    assert (
        row["int8_validation"]
        == json.loads((int8_run / "results/export/resnet/model.json").read_text())["int8"]["validation"]
    )
    table = inference(record)
    assert f"{row['onnx_img_per_s']:.0f} ({row['onnx_throughput_ratio']:.2f}×)" in table
    assert f"{row['int8_img_per_s']:.0f} ({row['int8_throughput_ratio']:.2f}×)" in table
