"""The Streamlit app: prediction, threshold, chart, Grad-CAM and the research-use notice."""

import sys

import pytest
import requests
from streamlit.testing.v1 import AppTest

from conftest import ARTIFACTS, FULLRES, ROOT, chromium, free_port, need, running

APP = str(ROOT / "src" / "skinlesion" / "serve" / "app.py")


@pytest.fixture
def app_env(sample_run, monkeypatch):
    monkeypatch.chdir(sample_run)  # the sidecar names its checkpoint relative to the run directory
    monkeypatch.setenv("SKINLESION_MODEL", str(sample_run / "results" / "export" / "baseline_cnn"))
    monkeypatch.delenv("SKINLESION_SERVICE_URL", raising=False)
    monkeypatch.delenv("SKINLESION_CHECKPOINT", raising=False)
    return sample_run


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> dict:
    metrics = {m.label: m.value for m in at.metric}
    return {"class": metrics["Predicted class"], "p_malignant": metrics["Malignant probability"]}


def test_sample_image_gives_class_threshold_chart_gradcam_and_notice(app_env):
    at = run_app()
    assert "not a diagnosis" in at.warning[0].value
    options = at.selectbox[0].options
    assert len(options) == 14 and {o.split("labelled ")[1][:-1] for o in options} == {
        "akiec",
        "bcc",
        "bkl",
        "df",
        "mel",
        "nv",
        "vasc",
    }
    decision = at.markdown[0].value
    assert decision.startswith("**Decision: ") and "operating threshold" in decision
    assert at.get("vega_lite_chart"), "probability bar chart"
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[0] == options[0].split()[0] and captions[1].startswith("Grad-CAM for"), captions
    assert not at.info  # the checkpoint was found and matched
    first = shown(at)
    at.selectbox[0].set_value(options[-1]).run()
    assert not at.exception and shown(at) != first  # another image, another answer


def test_app_without_the_checkpoint_still_predicts_and_says_why_gradcam_is_missing(app_env, monkeypatch, tmp_path):
    (tmp_path / "other.ckpt").write_bytes(b"not the exported model")
    monkeypatch.setenv("SKINLESION_CHECKPOINT", str(tmp_path / "other.ckpt"))
    at = run_app()
    assert shown(at)["class"] and "Grad-CAM needs the tier's checkpoint" in at.info[0].value


def test_app_against_the_service_shows_the_same_prediction(app_env, monkeypatch):
    in_process = shown(run_app())
    port = free_port()
    export = str(app_env / "results" / "export" / "baseline_cnn")
    with running(
        [sys.executable, "-m", "skinlesion", "serve", "--model", export, "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
    ):
        monkeypatch.setenv("SKINLESION_SERVICE_URL", f"http://127.0.0.1:{port}")
        at = run_app()
        assert "service http://127.0.0.1" in at.caption[0].value
        assert shown(at) == in_process


def test_upload_in_headless_chromium(app_env):
    from playwright.sync_api import sync_playwright

    image = sorted(need(FULLRES).glob("*.jpg"))[0]
    port = free_port()
    export = str(app_env / "results" / "export" / "baseline_cnn")
    command = [sys.executable, "-m", "skinlesion", "app", "--model", export, "--port", str(port)]
    errors = []
    health = f"http://127.0.0.1:{port}/_stcore/health"
    with running(command, health, cwd=app_env), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{port}", wait_until="networkidle")
        page.get_by_text("Upload an image").click()
        page.locator("input[type=file]").set_input_files(str(image))
        page.get_by_text("Decision:").wait_for(timeout=60_000)
        page.get_by_text("Grad-CAM for").wait_for(timeout=60_000)
        # The screenshot documents the app: wait until the Grad-CAM overlay itself has loaded, not just its caption.
        overlay_loaded = """() => [...document.querySelectorAll('[data-testid="stImageCaption"]')].some(
            c => c.innerText.startsWith("Grad-CAM for")
              && [...c.parentElement.querySelectorAll("img")].some(i => i.complete && i.naturalWidth > 0))"""
        page.wait_for_function(overlay_loaded, timeout=60_000)
        body = page.locator("body").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        browser.close()
    assert image.name in body and "not a diagnosis" in body and "Malignant probability" in body
    assert errors == []
    # Stopping `skinlesion app` stops the server: no orphaned Streamlit process keeps the port.
    with pytest.raises(requests.ConnectionError):
        requests.get(health, timeout=2)
    assert (ARTIFACTS / "app.png").stat().st_size > 50_000
