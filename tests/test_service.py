"""The inference service: predictions, health, Prometheus metrics, and a clear 4xx for every bad input."""

import io
import json
import sys

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image

from conftest import free_port, running
from skinlesion.serve.inference import OnnxClassifier, decode, to_input
from skinlesion.serve.service import create_app
from test_export import fullres_images

LIMIT = 2 * 2**20


@pytest.fixture(scope="module")
def export_dir(sample_run):
    return sample_run / "results" / "export" / "baseline_cnn"


@pytest.fixture(scope="module")
def client(export_dir):
    return TestClient(create_app(export_dir, max_upload_bytes=LIMIT, max_files=8))


@pytest.fixture(scope="module")
def jpegs():
    return fullres_images(3)


def post(client, *files, field="files"):
    return client.post("/predict", files=[(field, (name, data, "image/jpeg")) for name, data in files])


def test_predict_several_images(client, export_dir, jpegs):
    response = post(client, *jpegs)
    assert response.status_code == 200
    body = response.json()
    clf = OnnxClassifier(export_dir)
    assert body["model_version"] == clf.version and body["operating_threshold"] == clf.threshold
    assert [p["file"] for p in body["predictions"]] == [name for name, _ in jpegs]
    expected = clf.predict([(n, decode(n, d, size=clf.cache_size, max_pixels=10**8)) for n, d in jpegs])
    for got, want in zip(body["predictions"], expected, strict=True):
        probs = got["probabilities"]
        assert sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert probs == pytest.approx(want.probabilities, abs=1e-6)
        # Population probabilities: p_malignant is their malignant sum, the class the balanced decision.
        assert got["p_malignant"] == pytest.approx(sum(probs[c] for c in ("akiec", "bcc", "mel")), abs=1e-6)
        assert got["decision"] == ("malignant" if got["p_malignant"] >= clf.threshold else "benign")
        balanced = {c: p / w for (c, p), w in zip(probs.items(), clf.class_prior, strict=True)}
        assert got["predicted_class"] == max(balanced, key=balanced.get)


def test_probabilities_are_the_populations_not_the_uniform_priors(client, export_dir, jpegs):
    """Under the sample's training prior (not uniform: its classes are of unequal size) the returned
    columns are the uniform-prior ones reweighted by that prior, so they differ from the uniform-prior
    columns."""
    import onnxruntime as ort

    clf = OnnxClassifier(export_dir)
    prior = np.asarray(clf.class_prior)
    assert prior.max() / prior.min() > 1.3
    got = np.array([list(p["probabilities"].values()) for p in post(client, *jpegs).json()["predictions"]])
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([to_input(decode(n, d, size=clf.cache_size, max_pixels=10**8), clf.input_size) for n, d in jpegs])
    logits = session.run(["logits"], {"image": batch})[0] / clf.contract["temperature"]
    uniform = np.exp(logits - logits.max(1, keepdims=True))
    uniform /= uniform.sum(1, keepdims=True)
    population = uniform * prior / (uniform * prior).sum(1, keepdims=True)
    np.testing.assert_allclose(got, population, atol=1e-5)
    assert np.abs(got - uniform).max() > 0.005


def test_a_certainly_malignant_image_gets_200_not_500(client, monkeypatch, jpegs):
    """A float32 softmax whose benign columns underflow sums its malignant columns past 1 by an ulp;
    p_malignant is clipped to [0, 1], so the response validates."""
    degenerate = np.array([[0.2569, 0.6032, 0, 0, 0.1399, 0, 0]], dtype=np.float32)
    assert degenerate[0, [0, 1, 4]].sum(dtype=np.float64) > 1
    monkeypatch.setattr(
        OnnxClassifier, "outputs", lambda self, batch: (np.repeat(degenerate, len(batch), 0), np.zeros(len(batch)))
    )
    response = post(client, jpegs[0])
    assert response.status_code == 200
    assert response.json()["predictions"][0]["p_malignant"] == 1.0


def test_png_and_grayscale_images_are_accepted(client):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)).save(buf, "PNG")
    response = client.post("/predict", files={"files": ("gray.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200 and response.json()["predictions"][0]["file"] == "gray.png"


def test_health(client, export_dir):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["tier"] == "baseline_cnn"
    assert body["model_version"] == OnnxClassifier(export_dir).version


def bomb() -> bytes:
    """A 1.2 MB PNG that declares 30,000 x 30,000 pixels (900 megapixels)."""
    buf = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buf, "PNG")
    return buf.getvalue()


def large() -> bytes:
    """48 megapixels: over the service's 40-megapixel limit, under PIL's own bomb check."""
    buf = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buf, "PNG")
    return buf.getvalue()


def other_format(fmt: str) -> bytes:
    """A real image in a format Pillow reads but the contract does not name."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 120, 90)).save(buf, fmt)
    return buf.getvalue()


def chunks(total: int):
    for _ in range(total // 65536 + 1):
        yield b"\0" * 65536


BAD = {
    "not_an_image": (
        lambda c, j: post(c, ("notes.txt", b"just some text, not pixels")),
        415,
        "notes.txt: not a JPEG or PNG image",
    ),
    "gif": (lambda c, j: post(c, ("lesion.gif", other_format("GIF"))), 415, "lesion.gif: not a JPEG or PNG image"),
    "tiff": (lambda c, j: post(c, ("lesion.tif", other_format("TIFF"))), 415, "lesion.tif: not a JPEG or PNG image"),
    "webp": (lambda c, j: post(c, ("lesion.webp", other_format("WEBP"))), 415, "lesion.webp: not a JPEG or PNG image"),
    "truncated_jpeg": (lambda c, j: post(c, ("cut.jpg", j[0][1][: len(j[0][1]) // 2])), 422, "cut.jpg: cannot decode"),
    "decompression_bomb": (lambda c, j: post(c, ("bomb.png", bomb())), 413, "bomb.png: decompression bomb"),
    "large_image": (lambda c, j: post(c, ("large.png", large())), 413, "large.png: image of 8000x6000"),
    "oversized_declared": (lambda c, j: post(c, ("big.jpg", b"\xff" * (LIMIT + 1))), 413, "exceeds the limit"),
    "oversized_streamed": (
        lambda c, j: c.post(
            "/predict", content=chunks(LIMIT + 1), headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        413,
        "exceeds the limit",
    ),
    "empty_body": (lambda c, j: c.post("/predict"), 422, "in the field 'files'"),
    "wrong_field": (lambda c, j: post(c, j[0], field="image"), 422, "in the field 'files'"),
    "empty_file": (lambda c, j: post(c, ("empty.jpg", b"")), 422, "empty.jpg: empty file"),
    "too_many_files": (lambda c, j: post(c, *[j[0]] * 9), 422, "the limit is 8"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_working(client, jpegs, case):
    send, status, message = BAD[case]
    response = send(client, jpegs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert post(client, jpegs[0]).status_code == 200  # nothing else broke


def test_prometheus_metrics_count_requests_latency_and_errors(export_dir, jpegs):
    client = TestClient(create_app(export_dir))
    post(client, *jpegs)
    post(client, ("x.txt", b"text"))
    client.get("/health")
    text = client.get("/metrics").text
    assert 'skinlesion_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
    assert 'skinlesion_requests_total{endpoint="/predict",method="POST",status="415"} 1.0' in text
    assert 'skinlesion_errors_total{endpoint="/predict",reason="not_an_image"} 1.0' in text
    assert 'skinlesion_request_latency_seconds_count{endpoint="/predict"} 2.0' in text
    assert "skinlesion_images_classified_total 3.0" in text


def test_documented_serve_command_answers_over_http(export_dir, jpegs):
    port = free_port()
    command = [sys.executable, "-m", "skinlesion", "serve", "--model", str(export_dir), "--port", str(port)]
    with running(command, f"http://127.0.0.1:{port}/health"):
        response = requests.post(
            f"http://127.0.0.1:{port}/predict", files=[("files", (n, d)) for n, d in jpegs], timeout=30
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        assert "skinlesion_requests_total" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def test_the_service_keeps_its_published_contract(export_dir):
    """Schemathesis (all its checks, seeded and bounded) against every operation of /openapi.json:
    valid requests (real JPEG/PNG uploads, tests/schemathesis_hooks.py) and, where there is a body,
    invalid ones; every answer must be declared, typed and conform."""
    import schemathesis
    import schemathesis_hooks  # noqa: F401 - registers the image/jpeg and image/png strategies
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS

    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(export_dir, max_upload_bytes=LIMIT, max_files=8)
    )
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if list(operation.body) else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case):
                case.call_and_validate(checks=CHECKS.get_all())

            check()
            ran.append(f"{operation.label} {mode.value}")
    assert ran == ["GET /health positive", "GET /metrics positive", "POST /predict positive", "POST /predict negative"]


def declared_schema(spec: dict, path: str, method: str, status: int) -> dict:
    """The JSON schema /openapi.json declares for one answer, with the components it refers to."""
    content = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    return {**content["schema"], "$defs": spec["components"]["schemas"]}


def test_every_kind_of_answer_matches_its_declared_schema(client, jpegs):
    import jsonschema

    spec = client.get("/openapi.json").json()
    spec_text = json.dumps(spec).replace("#/components/schemas/", "#/$defs/")
    spec = json.loads(spec_text)
    answers = {
        ("/predict", "post", 200): post(client, *jpegs),
        ("/health", "get", 200): client.get("/health"),
        ("/predict", "post", 413): post(client, ("big.jpg", b"\xff" * (LIMIT + 1))),
        ("/predict", "post", 415): post(client, ("notes.txt", b"just text")),
        ("/predict", "post", 422): client.post("/predict"),
        ("/health", "get", 405): client.request("TRACE", "/health"),
        ("/predict", "post", 405): client.get("/predict"),
    }
    for (path, method, status), response in answers.items():
        assert response.status_code == status, (path, status, response.text)
        jsonschema.validate(response.json(), declared_schema(spec, path, method, status))
    assert set(answers["/health", "get", 405].headers["allow"].replace(" ", "").split(",")) == {"GET"}
    assert client.request("TRACE", "/metrics").headers["allow"] == "GET"
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["files"]["minItems"] == 1 and body["required"] == ["files"]
