"""The workflow as users run it: lint-clean, and end to end on the bundled sample."""

import subprocess

import pandas as pd

from conftest import ROOT, SAMPLE, SNAKEMAKE, run_snakemake


def test_snakemake_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout


def test_sample_workflow_end_to_end(tmp_path):
    run_snakemake(tmp_path, "--config", f"data_dir={SAMPLE}")
    data = tmp_path / "results" / "data"
    split = pd.read_csv(data / "split.csv")
    assert len(split) == len(pd.read_csv(SAMPLE / "HAM10000_metadata.csv"))
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    for log in ("download/HAM10000_metadata.csv.log", "checksum.log", "preprocess.log", "split.log"):
        assert (tmp_path / "results" / "logs" / log).exists(), log


def test_corrupted_raw_file_stops_the_workflow_before_it_is_used(tmp_path):
    """A raw file that no longer matches its checksum is quarantined and nothing downstream runs."""
    run_snakemake(tmp_path, "--config", f"data_dir={SAMPLE}", "--", "results/raw/HAM10000_images_part_2.zip")
    raw = tmp_path / "results" / "raw" / "HAM10000_images_part_2.zip"
    raw.write_bytes(raw.read_bytes()[:-10])
    proc = run_snakemake(tmp_path, "--config", f"data_dir={SAMPLE}", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "HAM10000_images_part_2.zip: MD5 expected" in out
    assert not (tmp_path / "results" / "data" / "checksums.csv").exists()
    assert not (tmp_path / "results" / "data" / "images.npy").exists()
    assert (tmp_path / "results" / "raw" / "HAM10000_images_part_2.zip.corrupt").exists()
