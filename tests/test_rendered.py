"""Every number rendered into README.md and docs/ matches the results file it names."""

import json

import pytest

from conftest import ROOT
from skinlesion.rendered import BLOCK, adopt, main, render_text, stale_blocks

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_rendered_block_matches_its_results_file():
    blocks = [m.group(2) for path in DOCS for m in BLOCK.finditer(path.read_text())]
    assert blocks, "no rendered block in README.md or docs/"
    assert {str(path.relative_to(ROOT)): stale_blocks(path) for path in DOCS} == {
        str(path.relative_to(ROOT)): [] for path in DOCS
    }


def selection_record(delta_bal):
    rows = [{"variant": "default", "fold": str(k), "balanced_accuracy": 0.6, "malignant_auroc": 0.9} for k in range(3)]
    stats = {
        "balanced_accuracy": 0.6,
        "malignant_auroc": 0.9,
        "delta_balanced_accuracy": 0.0,
        "delta_malignant_auroc": 0,
    }
    rows += [{"variant": "default", "fold": f, **stats} for f in ("mean", "sd")]
    rows += [
        {"variant": "mixup", "fold": str(k), "balanced_accuracy": 0.6 + d, "delta_balanced_accuracy": d}
        for k, d in enumerate(delta_bal)
    ]
    mean = sum(delta_bal) / 3
    sd = (sum((d - mean) ** 2 for d in delta_bal) / 2) ** 0.5
    rows.append(
        {
            "variant": "mixup",
            "fold": "mean",
            "balanced_accuracy": 0.6 + mean,
            "malignant_auroc": 0.9,
            "delta_balanced_accuracy": mean,
            "delta_malignant_auroc": 0.0,
        }
    )
    rows.append(
        {
            "variant": "mixup",
            "fold": "sd",
            "balanced_accuracy": sd,
            "malignant_auroc": 0.01,
            "delta_balanced_accuracy": sd,
            "delta_malignant_auroc": 0.01,
        }
    )
    return {
        "kind": "selection",
        "tier": "baseline_cnn",
        "folds": 3,
        "variants": {"mixup": {"mixup_alpha": 0.2}},
        "rows": rows,
        "trainings": 6,
        "wall_minutes": 42.0,
        "command": "snakemake x",
        "hardware": "cpu",
        "date": "2026-12-01",
        "commit": "0123456789abcdef",
    }


def test_a_hand_edited_number_is_caught(tmp_path):
    (tmp_path / "sel.json").write_text(json.dumps(selection_record([0.02, 0.03, 0.025])))
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- rendered from sel.json -->\n<!-- end rendered -->\n")
    doc.write_text(render_text(doc.read_text(), root=tmp_path))
    assert "+0.025 ± 0.005" in doc.read_text() and "| yes |" in doc.read_text()
    assert stale_blocks(doc, root=tmp_path) == []
    doc.write_text(doc.read_text().replace("+0.025 ± 0.005", "+0.035 ± 0.005"))
    assert stale_blocks(doc, root=tmp_path) == ["sel.json"]


def test_the_selection_rule_needs_more_than_one_standard_error():
    assert adopt((0.02, 0.01), (0.0, 0.01), k=3)
    assert not adopt((0.005, 0.01), (0.0, 0.01), k=3)  # under sd / sqrt(3) = 0.0058
    assert not adopt((0.02, 0.01), (-0.01, 0.01), k=3)  # malignant AUROC falls by more than 0.0058


def test_a_missing_source_is_named(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- rendered from nowhere.json -->\n<!-- end rendered -->\n")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        main([str(doc)])
