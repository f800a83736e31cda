"""The workflow as users run it: lint-clean, and end to end on the bundled sample."""

import json
import re
import shlex
import shutil
import subprocess

import pandas as pd

from conftest import ROOT, SAMPLE, SNAKEMAKE, run_snakemake, sample_args, sample_run_args

TIERS = ("baseline_cnn", "resnet", "transfer")


def test_snakemake_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout


def readme_snakemake_commands() -> list[list[str]]:
    """Every `snakemake ...` command line in the README's code blocks and inline code, split like a shell."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = re.findall(r"^(snakemake .*)$", text, re.MULTILINE) + re.findall(r"`(snakemake [^`]*)`", text)
    return [shlex.split(line, comments=True)[1:] for line in lines]


def test_readme_commands_keep_their_targets():
    """`--config` takes every word after it: a target written after it would be read as a config entry."""
    from snakemake.cli import get_argument_parser

    commands = readme_snakemake_commands()
    assert len(commands) >= 8
    for argv in commands:
        args = get_argument_parser().parse_args(argv)
        assert all("=" in entry for entry in args.config or []), argv
        if "results/report.html" in argv:
            assert "results/report.html" in args.targets, argv


def test_sample_workflow_end_to_end(sample_run):
    results = sample_run / "results"
    split = pd.read_csv(results / "data" / "split.csv")
    assert len(split) == len(pd.read_csv(SAMPLE / "HAM10000_metadata.csv"))
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    for log in (
        "download/HAM10000_metadata.csv.log",
        "checksum.log",
        "preprocess.log",
        "split.log",
        "train/resnet.log",
    ):
        assert (results / "logs" / log).exists(), log
    for tier in ("baseline_cnn", "resnet", "transfer"):
        history = pd.read_csv(results / "models" / tier / "history.csv")
        assert list(history["epoch"]) == [0, 1], tier
        assert {"train/loss", "val/bal_acc", "val/auroc", "val/malignant_auroc", "time/data_wait_frac"} <= set(history)
    assert (results / "figures" / "augment_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workflow_runs_its_environments_executables_without_activation(sample_run):
    """`.venv/bin/snakemake ...` with the venv's bin off PATH: the nbconvert rule still finds jupyter."""
    import os
    import sys

    bin_dir = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != bin_dir)
    html = sample_run / "results" / "error_analysis" / "error_analysis.html"
    before = html.stat().st_mtime_ns
    cmd = [os.path.join(bin_dir, "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(sample_run), "--cores", "2"]
    # The report is rebuilt from the new page too, so that the run is complete again afterwards.
    cmd += ["--forcerun", "error_analysis_html", *sample_run_args(sample_run, "--", "results/report.html")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert html.stat().st_mtime_ns > before


def test_nothing_to_do_after_a_complete_sample_run(sample_run):
    proc = run_snakemake(sample_run, "-n", *sample_run_args(sample_run))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_corrupted_raw_file_stops_the_workflow_before_it_is_used(tmp_path):
    """A raw file that no longer matches its checksum is quarantined and nothing downstream runs."""
    run_snakemake(tmp_path, *sample_args("--", "results/raw/HAM10000_images_part_2.zip"))
    raw = tmp_path / "results" / "raw" / "HAM10000_images_part_2.zip"
    raw.write_bytes(raw.read_bytes()[:-10])
    proc = run_snakemake(tmp_path, *sample_args("--", "results/data/split.csv"), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "HAM10000_images_part_2.zip: MD5 expected" in out
    assert not (tmp_path / "results" / "data" / "checksums.csv").exists()
    assert not (tmp_path / "results" / "data" / "images.npy").exists()
    assert (tmp_path / "results" / "raw" / "HAM10000_images_part_2.zip.corrupt").exists()


def test_snakemakes_own_report_builds_after_a_run(sample_run, tmp_path):
    """docs/workflow.md: after a run, `snakemake --cores 1 --report snakemake_report.html` with the
    run's configuration builds Snakemake's report from the run's figures."""
    report = tmp_path / "snakemake_report.html"
    run_snakemake(sample_run, *sample_run_args(sample_run, "--report", str(report)))
    html = report.read_text()
    assert "augment_preview.png" in html and "reliability" in html


def test_rerun_from_scratch_gives_identical_results(sample_run, tmp_path):
    """Same seed, CPU, data in another folder: split, metrics, predictions and exports are byte-identical."""
    data_copy = tmp_path / "elsewhere" / "sample"
    shutil.copytree(SAMPLE, data_copy)
    targets = ["results/metrics/comparison.csv", *(f"results/export/{t}/model.json" for t in TIERS)]
    run_snakemake(tmp_path, *sample_args(f"data_dir={data_copy}", "--", *targets))
    same = ["data/split.csv", "data/split_counts.csv", "data/norm_stats.json"]
    for tier in TIERS:
        same += [f"metrics/{tier}.json", f"predictions/{tier}_test.csv"]
        same += [f"export/{tier}/model.onnx", f"export/{tier}/model.json"]
    for name in same:
        first = (sample_run / "results" / name).read_bytes()
        assert (tmp_path / "results" / name).read_bytes() == first, name
    # The comparison table also reports the measured training wall time, which no rerun can reproduce.
    first, again = (pd.read_csv(run / "results" / "metrics" / "comparison.csv") for run in (sample_run, tmp_path))
    assert "train_minutes" in first
    pd.testing.assert_frame_equal(again.drop(columns="train_minutes"), first.drop(columns="train_minutes"))


def test_changing_one_tier_reruns_only_that_tier(sample_run, tmp_path):
    cfg = tmp_path / "lr.yaml"
    cfg.write_text("train:\n  resnet:\n    lr: 0.001\n")
    proc = run_snakemake(sample_run, "-n", *sample_run_args(sample_run, configfiles=(cfg,)))
    out = proc.stdout + proc.stderr
    table = out.split("Job stats:")[1].split("\n\n")[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    assert jobs["train"] == 1 and jobs["evaluate"] == 1 and jobs["report"] == 1
    assert "download" not in jobs and "preprocess" not in jobs and "split" not in jobs
    assert "wildcards: tier=resnet" in out and "tier=baseline_cnn" not in out and "tier=transfer" not in out


def test_every_result_carries_its_provenance(sample_run):
    from mlflow.tracking import MlflowClient

    results = sample_run / "results"
    checksums = pd.read_csv(results / "data" / "checksums.csv")
    files = [results / "metrics" / f"{t}.json" for t in TIERS]
    files += [results / "metrics" / f"{t}_external.json" for t in TIERS]
    files += [results / "export" / t / "model.json" for t in TIERS]
    provenances = [json.loads(f.read_text())["provenance"] for f in files]
    first = provenances[0]
    assert all(p == first for p in provenances)
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", first["git_commit"])
    assert re.fullmatch(r"[0-9a-f]{16}", first["config_sha256"]) and first["seed"] == 42
    assert first["packages"]["torch"] == "2.14.1" and first["packages"]["snakemake"]
    assert first["data_checksums"] == dict(zip(checksums["file"], checksums["md5"], strict=True))
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    for tier in TIERS:
        run = client.get_run((results / "models" / tier / "mlflow_run_id.txt").read_text().strip())
        assert run.data.tags["git_commit"] == first["git_commit"]
        assert run.data.tags["config_sha256"] == first["config_sha256"]
    report = (results / "report.html").read_text()
    assert first["git_commit"] in report and first["config_sha256"] in report
