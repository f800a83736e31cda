"""The workflow as users run it: lint-clean, and end to end on the bundled sample."""

import subprocess

import pandas as pd

from conftest import ROOT, SAMPLE, SNAKEMAKE, run_snakemake, sample_args


def test_snakemake_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout


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


def test_nothing_to_do_after_a_complete_sample_run(sample_run):
    proc = run_snakemake(sample_run, "-n", *sample_args())
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
