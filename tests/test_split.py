"""The data stage on the full 10,015-image mirror: a leak-free, stratified, reproducible split."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_snakemake
from skinlesion import CLASSES
from skinlesion.data.split import make_split, split_counts

DATA = ("results", "data")


def table(workdir, name):
    return pd.read_csv(workdir.joinpath(*DATA, name), dtype={"image_id": str, "lesion_id": str})


def test_all_images_cached_and_split(mirror_run, mirror):
    split = table(mirror_run, "split.csv")
    meta = pd.read_csv(mirror / "HAM10000_metadata.csv")
    assert len(split) == len(meta) == 10015
    assert set(split["split"]) == {"train", "val", "test"}
    assert np.load(mirror_run.joinpath(*DATA, "images.npy"), mmap_mode="r").shape == (10015, 128, 128, 3)
    assert list(split.columns) == ["image_id", "lesion_id", "dx", "malignant", "split"]
    assert split["malignant"].sum() == 1954


def test_no_lesion_in_two_splits(mirror_run):
    split = table(mirror_run, "split.csv")
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    # The mirror really has repeated lesions, so an image-level split would have leaked.
    assert (split.groupby("lesion_id").size() > 1).sum() == 1956


def test_each_split_keeps_the_class_mix_within_2_points(mirror_run):
    split = table(mirror_run, "split.csv")
    whole = split["dx"].value_counts(normalize=True).reindex(list(CLASSES))
    for name, part in split.groupby("split"):
        share = part["dx"].value_counts(normalize=True).reindex(list(CLASSES), fill_value=0)
        assert (share - whole).abs().max() < 0.02, name
    sizes = split["split"].value_counts(normalize=True)
    assert abs(sizes["train"] - 0.70) < 0.01 and abs(sizes["test"] - 0.15) < 0.01


def test_counts_table_matches_split(mirror_run):
    counts = table(mirror_run, "split_counts.csv").set_index("split")
    split = table(mirror_run, "split.csv")
    assert counts.loc["all", "images"] == 10015 and counts.loc["all", "lesions"] == 7470
    assert counts.loc["test", "mel"] == ((split["split"] == "test") & (split["dx"] == "mel")).sum()
    assert counts.loc[["train", "val", "test"], "images"].sum() == 10015


def test_channel_stats_of_the_training_split(mirror_run):
    stats = json.loads(mirror_run.joinpath(*DATA, "norm_stats.json").read_text())
    split = table(mirror_run, "split.csv")
    index = table(mirror_run, "index.csv")
    images = np.load(mirror_run.joinpath(*DATA, "images.npy"), mmap_mode="r")
    train_rows = index.loc[index["image_id"].isin(split.loc[split["split"] == "train", "image_id"]), "row"]
    sub = images[np.sort(train_rows.to_numpy())[::25]].astype(float) / 255
    assert stats["n_images"] == (split["split"] == "train").sum()
    np.testing.assert_allclose(stats["mean"], sub.mean(axis=(0, 1, 2)), atol=0.01)
    np.testing.assert_allclose(stats["std"], sub.std(axis=(0, 1, 2)), atol=0.01)


def test_rerun_from_scratch_is_byte_identical(mirror_run, mirror, tmp_path):
    run_snakemake(tmp_path, "--config", f"data_dir={mirror}", "--", "data")
    for name in ("checksums.csv", "index.csv", "split.csv", "split_counts.csv", "norm_stats.json", "images.npy"):
        assert tmp_path.joinpath(*DATA, name).read_bytes() == mirror_run.joinpath(*DATA, name).read_bytes(), name


def test_nothing_to_do_after_a_complete_run(mirror_run, mirror):
    proc = run_snakemake(mirror_run, "-n", "--config", f"data_dir={mirror}", "--", "data")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_a_changed_seed_changes_the_split(mirror_run):
    index = table(mirror_run, "index.csv")
    a = make_split(index, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=42)
    b = make_split(index, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=7)
    assert a.equals(table(mirror_run, "split.csv"))
    assert (a["split"] != b["split"]).mean() > 0.2
    assert split_counts(b).set_index("split").loc["all", "images"] == 10015


def test_split_rejects_a_lesion_with_two_diagnoses():
    index = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["L1", "L1"], "dx": ["nv", "mel"], "malignant": [0, 1]})
    with pytest.raises(ValueError, match="more than one dx: \\['L1'\\]"):
        make_split(index, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)


def test_table_helpers_and_reporting_do_not_import_torch():
    """The pandas/scikit-learn rules (split tables, selection summary, scoring, report) run without torch."""
    import subprocess
    import sys

    modules = ", ".join(
        f"skinlesion.{m}"
        for m in ("tables", "train.selection", "evaluate.metrics", "evaluate.predictions", "evaluate.scoring")
        + ("report.build", "train.metadata", "data.split", "rendered")
    )
    code = f"import sys, {modules}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
