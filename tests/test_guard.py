"""The input guard: image-quality checks, the out-of-distribution score in the exported graph, and
the service's and the app's answer for an image the model does not know."""

import io
import json
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from conftest import chromium, free_port, running
from skinlesion.config import load_config
from skinlesion.serve.export import Deployed, fit_gaussian, mahalanobis, split_classifier
from skinlesion.serve.guard import QUALITY_REASONS, quality_reasons, reference_ood_images, threshold_for_share
from skinlesion.serve.inference import OnnxClassifier, decode, read_upload
from skinlesion.serve.service import create_app
from skinlesion.train.models import build_model
from test_export import fullres_images

LIMITS = load_config()["export"]["guard"]["quality"]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def reasons_of(name: str, data: bytes) -> list[str]:
    upload = read_upload(name, data, size=128, max_pixels=10**8)
    return quality_reasons(upload.square, upload.size, LIMITS)


def test_real_dermatoscopic_images_pass_every_quality_check():
    for name, data in fullres_images(150):
        assert reasons_of(name, data) == [], name


def test_each_quality_check_names_its_reason():
    name, data = fullres_images(1)[0]
    real = Image.open(io.BytesIO(data))
    small = io.BytesIO()
    real.resize((80, 60)).save(small, format="JPEG")
    blurred = np.asarray(real.filter(ImageFilter.GaussianBlur(25)))
    dark = (np.asarray(real) * 0.12).astype(np.uint8)
    bright = np.clip(np.asarray(real).astype(int) + 200, 0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (450, 600, 3), dtype=np.uint8)
    assert reasons_of("small.jpg", small.getvalue())[0] == "too_small"  # upscaled, it is also blurred
    assert reasons_of("flat.png", png(np.full((450, 600, 3), 128, np.uint8))) == ["nearly_uniform", "blurred"]
    assert "too_dark" in reasons_of("dark.png", png(dark))
    assert "overexposed" in reasons_of("bright.png", png(bright))
    assert reasons_of("blurred.png", png(blurred)) == ["blurred"]
    assert reasons_of("noise.png", png(noise)) == ["noisy"]
    assert set(QUALITY_REASONS) == {"too_small", "nearly_uniform", "too_dark", "overexposed", "blurred", "noisy"}


@pytest.mark.parametrize("tier", ["baseline_cnn", "resnet", "transfer"])
def test_the_network_splits_at_its_classifier_into_features_and_head(tier):
    model = {"transfer": {"backbone": "tf_efficientnet_lite0", "pretrained": False}}.get(tier, {})
    net = build_model(tier, 7, model, init_weights=False).eval()
    body, head = split_classifier(net)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = body(x)
        assert features.shape == (3, head.in_features)
        torch.testing.assert_close(head(features), net(x))


def test_mahalanobis_score_is_the_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    labels = rng.integers(0, 2, 20000)
    features = means[labels] + rng.normal(0, [1.0, 3.0], (20000, 2))
    fitted_means, precision = fit_gaussian(features, labels, 2)
    np.testing.assert_allclose(fitted_means, means, atol=0.2)
    np.testing.assert_allclose(np.linalg.inv(precision), np.diag([1.0, 9.0]), rtol=0.05, atol=0.1)
    points = torch.tensor([[0.0, 0.0], [9.0, 0.0], [5.0, 6.0]])
    d2 = mahalanobis(points, torch.tensor(means), torch.tensor(np.diag([1.0, 1 / 9]))).numpy()
    np.testing.assert_allclose(d2, [0.0, 1.0, 25.0 + 4.0])


def test_the_threshold_accepts_the_stated_share_of_validation_scores():
    scores = np.random.default_rng(1).normal(size=1001)
    threshold = threshold_for_share(scores, 0.95)
    assert (scores <= threshold).mean() == pytest.approx(0.95, abs=1e-3)


def test_the_graphs_ood_score_is_the_configured_one(sample_run):
    """ONNX Runtime's ood_score is the Deployed module's, and energy/msp follow the logits."""
    export = sample_run / "results" / "export" / "baseline_cnn"
    contract = json.loads((export / "model.json").read_text())
    assert contract["outputs"] == ["logits", "probabilities", "ood_score"]
    guard = contract["guard"]
    assert guard["ood"]["score"] == "mahalanobis" and guard["ood"]["fitted_on"]["split"] == "train"
    assert guard["ood"]["threshold_split"] == "val" and guard["ood"]["accept_share"] == 0.95
    assert guard["quality"] == LIMITS and set(guard["quality_flagged"]) == {"split", *QUALITY_REASONS} - {"too_small"}
    assert guard["quality_flagged"]["nearly_uniform"] == 0  # no training image is refused for quality
    from skinlesion.train.module import load_classifier

    model = load_classifier(sample_run / contract["checkpoint"])
    deployed = Deployed(model, contract["temperature"], contract["class_prior"], score="energy").eval()
    clf = OnnxClassifier(export)
    batch = np.stack(
        [np.asarray(Image.fromarray(decode(n, d, size=128, max_pixels=10**8)).resize((32, 32), Image.BILINEAR))
         for n, d in fullres_images(4)]
    ).transpose(0, 3, 1, 2).astype(np.float32)  # fmt: skip
    with torch.no_grad():
        logits, _, energy = deployed(torch.from_numpy(batch))
    t = contract["temperature"]
    np.testing.assert_allclose(energy.numpy(), -t * torch.logsumexp(logits / t, dim=1).numpy(), rtol=1e-6)
    assert np.isfinite(clf.outputs(batch)[1]).all()


@pytest.fixture(scope="module")
def guarded_client(sample_run):
    export = sample_run / "results" / "export" / "baseline_cnn"
    return TestClient(create_app(export)), OnnxClassifier(export)


def test_every_out_of_distribution_image_is_answered_but_refused_with_a_reason(guarded_client):
    client, _ = guarded_client
    ood = reference_ood_images()
    response = client.post("/predict", files=[("files", (n, d, "image/png")) for n, d in ood])
    assert response.status_code == 200, response.text
    for (name, _), p in zip(ood, response.json()["predictions"], strict=True):
        assert p["accepted"] is False and p["reasons"], name
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)  # the prediction is still there
    metrics = client.get("/metrics").text
    refused = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("skinlesion_images_refused_total{")
    }
    by_reason = {}
    for p in response.json()["predictions"]:
        for r in p["reasons"]:
            by_reason[r] = by_reason.get(r, 0) + 1
    assert {k: v for k, v in refused.items() if v} == by_reason


def test_real_ham10000_images_are_accepted_at_the_stated_share(guarded_client):
    """The 150 full-size HAM10000 images (uploads as a user makes them): at least the share the
    threshold was set to accept on the validation split, less a binomial margin of two standard errors."""
    client, clf = guarded_client
    images = fullres_images(150)
    answers = []
    for i in range(0, len(images), 50):
        response = client.post("/predict", files=[("files", (n, d, "image/jpeg")) for n, d in images[i : i + 50]])
        answers += response.json()["predictions"]
    share = clf.contract["guard"]["ood"]["accept_share"]
    accepted = np.mean([p["accepted"] for p in answers])
    assert accepted >= share - 2 * np.sqrt(share * (1 - share) / len(answers)), accepted


def test_the_app_warns_above_the_result_in_headless_chromium(sample_run, tmp_path):
    from playwright.sync_api import sync_playwright

    face = tmp_path / "grace_hopper.jpg"
    face.write_bytes(dict(reference_ood_images())["sample_data/grace_hopper.jpg"])
    port = free_port()
    export = str(sample_run / "results" / "export" / "baseline_cnn")
    command = [sys.executable, "-m", "skinlesion", "app", "--model", export, "--port", str(port)]
    with running(command, f"http://127.0.0.1:{port}/_stcore/health", cwd=sample_run), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}", wait_until="networkidle")
        page.get_by_text("Upload an image").click()
        page.locator("input[type=file]").set_input_files(str(face))
        warning = page.get_by_text("Not a dermatoscopic image of the kind this model knows")
        warning.wait_for(timeout=60_000)
        decision = page.get_by_text("Decision:")
        decision.wait_for(timeout=60_000)
        above = warning.bounding_box()["y"] < decision.bounding_box()["y"]
        body = page.locator("body").inner_text()
        browser.close()
    assert above and "unlike its training images" in body and "do not use it" in body
