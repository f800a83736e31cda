"""Every number rendered into README.md and docs/ matches the results file it names."""

import json
import runpy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from skinlesion.evaluate.goals import BUDGETS, METRIC_GOALS, judge
from skinlesion.evaluate.metrics import recommended_tier
from skinlesion.rendered import (
    BLOCK,
    RENDERERS,
    main,
    render_text,
    stale_blocks,
    workflow,
    workflow_goals,
    workflow_per_lesion,
    workflow_runtime,
)
from skinlesion.train.selection import adopt, false_adoption_rate

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_rendered_block_matches_its_results_file():
    blocks = [m.group(2) for path in DOCS for m in BLOCK.finditer(path.read_text())]
    assert blocks, "no rendered block in README.md or docs/"
    assert {str(path.relative_to(ROOT)): stale_blocks(path) for path in DOCS} == {
        str(path.relative_to(ROOT)): [] for path in DOCS
    }


def test_the_readme_shows_the_headline_run_and_its_goals():
    """The README's one results table and the goals verdict come from the recorded headline run."""
    sources = [m.group(2) for m in BLOCK.finditer((ROOT / "README.md").read_text())]
    assert "benchmarks/results/workflow.json" in sources and "benchmarks/results/workflow.json#goals" in sources


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


def test_the_selection_rule_is_a_paired_t_test_and_takes_a_useless_variant_at_its_stated_rate():
    assert adopt((0.02, 0.01), (0.0, 0.01), k=3)
    # t(0.9, 2) = 1.886 standard errors of sd / sqrt(3) = 0.0058: 0.0109; one standard error is no longer enough.
    assert not adopt((0.010, 0.01), (0.0, 0.01), k=3)
    assert not adopt((0.02, 0.01), (-0.01, 0.01), k=3)  # malignant AUROC falls by more than 0.0058
    # Variants that change nothing: normal fold differences of both metrics, 3 folds.
    rng = np.random.default_rng(0)
    bal, auroc = rng.normal(0, 0.01, (2, 20000, 3))
    taken = [adopt((b.mean(), b.std(ddof=1)), (a.mean(), a.std(ddof=1)), k=3) for b, a in zip(bal, auroc, strict=True)]
    assert np.mean(taken) == pytest.approx(false_adoption_rate(3), abs=0.006)
    assert false_adoption_rate(3) < 0.1


def test_a_missing_source_is_named(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- rendered from nowhere.json -->\n<!-- end rendered -->\n")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        main([str(doc)])


def test_a_workflow_run_is_recorded_from_its_own_files(sample_run, tmp_path):
    """benchmarks/record.py workflow takes every number from the run's metrics JSONs, histories and
    Snakemake benchmark files, and the rendered tables show them."""
    time_log = tmp_path / "time.log"
    subprocess.run(["/usr/bin/time", "-v", "-o", str(time_log), "sleep", "7"], check=True)
    out = tmp_path / "workflow.json"
    record_py = [sys.executable, str(ROOT / "benchmarks" / "record.py"), "workflow", "--results"]
    subprocess.run(
        [
            *record_py,
            str(sample_run / "results"),
            "--time-log",
            str(time_log),
            "--command",
            "snakemake x",
            "--out",
            str(out),
        ],
        check=True,
    )
    record = json.loads(out.read_text())
    results = sample_run / "results"
    tiers = ["baseline_cnn", "resnet", "transfer"]
    assert [m["model"] for m in record["models"]] == [*tiers, "mean of baseline_cnn + resnet + transfer"]
    metrics = {t: json.loads((results / "metrics" / f"{t}.json").read_text()) for t in tiers}
    assert record["recommended"] == recommended_tier(metrics)
    assert record["commit"] == metrics["resnet"]["provenance"]["git_commit"]
    assert record["wall_minutes"] == 0.1  # 7 s, from the time log
    headline, runtime, per_lesion = workflow(record), workflow_runtime(record), workflow_per_lesion(record)
    for model, tier in zip(record["models"][:3], tiers, strict=True):
        assert model["test"]["metrics"] == metrics[tier]["test"]["metrics"]
        assert model["external"]["n_images"] == 150  # the sample run's external test set
        train = pd.read_csv(results / "benchmarks" / "train" / f"{tier}.tsv", sep="\t")
        assert model["train"]["minutes"] == round(train["s"].iloc[0] / 60, 1)
        assert model["epochs"] == len(pd.read_csv(results / "models" / tier / "history.csv"))
        m = metrics[tier]["test"]["metrics"]["balanced_accuracy"]
        assert f"{m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f})" in headline
        m = metrics[tier]["test_per_lesion"]["metrics"]["malignant_auroc"]
        assert f"{m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f})" in per_lesion
        assert f"| {tier} | 32 px, 2 | {model['train']['minutes']:.1f} min |" in runtime
    # Against the goals: the one model validation recommends, per test image, declared before the run;
    # beside it the same model as deployed (the sample run scores its exports).
    goals = workflow_goals(record)
    recommended = next(m for m in record["models"] if m["model"] == record["recommended"])
    assert f"goal, for {record['recommended']} (recommended by validation), per test image" in goals
    deployed = recommended["deployed"]["fp32"]["test"]["metrics"]
    for metric in ("balanced_accuracy", "malignant_auroc"):
        m = recommended["test"]["metrics"][metric]
        verdict = "met" if m["value"] >= {"balanced_accuracy": 0.70, "malignant_auroc": 0.93}[metric] else "not met"
        d = deployed[metric]
        assert f"| {m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f}) | {verdict} | {d['value']:.3f}" in goals
    assert "per lesion" not in goals


def test_the_goals_are_judged_on_the_recommended_model_per_test_image_and_rendered_as_judged():
    record = json.loads((ROOT / "benchmarks" / "results" / "workflow.json").read_text())
    verdicts = judge(record)
    model = next(m for m in record["models"] if m["model"] == record["recommended"])
    assert verdicts["model"] == record["recommended"]
    assert [row["key"] for row in verdicts["metrics"]] == list(METRIC_GOALS)
    for row in verdicts["metrics"]:
        assert row["entry"] == model["test"]["metrics"][row["key"]]  # per image, not per lesion or + metadata
        assert row["met"] == (row["entry"]["value"] >= METRIC_GOALS[row["key"]])
    longest = max((m for m in record["models"] if "train" in m), key=lambda m: m["train"]["minutes"])
    assert verdicts["train"] == {
        "model": longest["model"],
        "minutes": longest["train"]["minutes"],
        "budget": BUDGETS["train_minutes"],
        "met": longest["train"]["minutes"] <= BUDGETS["train_minutes"],
    }
    assert verdicts["wall"]["met"] == (record["wall_minutes"] <= BUDGETS["wall_minutes"])
    # A model that reaches both goals is judged met on both; the table only writes the verdicts.
    better = json.loads(json.dumps(record))
    for key, goal in METRIC_GOALS.items():
        next(m for m in better["models"] if m["model"] == better["recommended"])["test"]["metrics"][key]["value"] = goal
    assert all(row["met"] for row in judge(better)["metrics"])
    table = workflow_goals(better)
    assert table.count("| met |") == 2 + verdicts["train"]["met"] + verdicts["wall"]["met"]


def test_a_run_without_metrics_is_refused(tmp_path):
    (tmp_path / "metrics").mkdir()
    record_py = [sys.executable, str(ROOT / "benchmarks" / "record.py"), "workflow", "--results", str(tmp_path)]
    done = subprocess.run([*record_py, "--time-log", "x", "--command", "x"], capture_output=True, text=True)
    assert done.returncode != 0 and "metrics holds no tier's metrics JSON" in done.stderr


def test_a_ci_run_is_recorded_from_pytests_summary_line():
    ci_run = runpy.run_path(str(ROOT / "benchmarks" / "ci_run.py"))
    log = "collected 177 items\n...\n= 1 failed, 173 passed, 3 skipped, 259 warnings in 2157.55s (0:35:57) =\n"
    summary = ci_run["pytest_summary"](log)
    assert summary == {"counts": {"failed": 1, "passed": 173, "skipped": 3, "warnings": 259}, "pytest_s": 2157.55}
    with pytest.raises(ValueError, match="no pytest summary"):
        ci_run["pytest_summary"]("make: *** [Makefile:14: .venv/.installed] Error 1\n")
    record = {"kind": "ci_run", "wall_s": 2445.0, "install_s": 287.4, **summary, "preinstalled": [], "cores": 2}
    record |= {"podman_reset": True, "command": "ci_run.py", "hardware": "cpu", "date": "d", "commit": "c"}
    text = RENDERERS["ci_run", ""](record)
    assert "**40 min 45 s**" in text and "install 4 min 47 s" in text and "`make test` 35 min 58 s" in text
    assert "1 failed, 173 passed, 3 skipped" in text and "already installed: none" in text
