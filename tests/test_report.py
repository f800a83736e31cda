"""results/report.html renders in headless Chromium: every section, every image, no console error."""

from pathlib import Path

import pandas as pd

from conftest import ARTIFACTS, chromium
from skinlesion.report.build import with_integers

SECTIONS = ["summary", "data", "augmentation", "training", "comparison", "external", "errors", "provenance"]


def test_report_renders_every_section_without_errors(sample_run):
    from playwright.sync_api import sync_playwright

    report = sample_run / "results" / "report.html"
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html  # self-contained
    errors, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda req: failed.append(req.url))
        page.goto(report.as_uri(), wait_until="load")
        for section in SECTIONS + ["tier-baseline_cnn", "tier-resnet", "tier-transfer"]:
            assert page.locator(f"section#{section}").is_visible(), section
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
        n_images = page.evaluate("document.images.length")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        external = page.locator("section#external").inner_text()
        summary = page.locator("section#summary").inner_text()
        browser.close()
    assert broken == [] and n_images >= 3 * 3 + 3
    assert errors == [] and failed == []
    assert "malignant_auroc" in external
    # The answer first: which model, how good (with intervals), at which threshold, per image and per lesion.
    assert "Recommended model:" in summary and "highest validation balanced accuracy" in summary
    for row in ("test, per image", "test, per lesion", "test + metadata, per lesion", "external test set"):
        assert row in summary, row
    assert "sensitivity / specificity" in summary and "threshold" in summary
    assert Path(ARTIFACTS / "report.png").stat().st_size > 50_000


def test_whole_numbers_print_as_integers():
    frame = pd.DataFrame({"epochs": [30.0, None], "support": [8.0, 12.0], "auroc": [0.5, 1.0], "ci": ["0.6-0.7", None]})
    out = with_integers(frame)
    assert str(out["epochs"].dtype) == "Int64" and out["epochs"].isna().tolist() == [False, True]
    assert str(out["support"].dtype) == "Int64"
    assert out["auroc"].dtype == float and out["ci"].iloc[0] == "0.6-0.7"
    html = out.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}")
    assert "<td>30</td>" in html and "<td>8</td>" in html and "30.000" not in html
