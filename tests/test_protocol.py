"""The sealed test split: no training, selection, threshold, calibration or metadata-fitting code
path is given, or depends on, a test image or label (docs/evaluation.md)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import dry_run_jobs, run_snakemake, sample_args
from skinlesion import CLASSES, MALIGNANT
from skinlesion.config import load_config, tier_settings
from skinlesion.data.split import channel_stats
from skinlesion.report.figures import augment_preview
from skinlesion.serve.export import export_tier, weights_sha256
from skinlesion.tables import SealedTestError
from skinlesion.train.datamodule import LesionDataModule
from skinlesion.train.fit import train_tier
from skinlesion.train.metadata import fit_metadata_model
from skinlesion.train.module import load_classifier
from skinlesion.train.selection import make_folds

SETTINGS = tier_settings(load_config()["train"], "baseline_cnn")
TINY = {
    **SETTINGS,
    "image_size": 32,
    "epochs": 2,
    "num_workers": 0,
    "limit_train_batches": 3,
    "model": {"widths": [8, 16], "convs_per_block": 1, "dropout": 0.2},
}


def development_steps(data, out, ckpt):
    """Every development-side entry point, called on the split table ``data / split_name``."""
    images, index, stats = (str(data / f) for f in ("images.npy", "index.csv", "norm_stats.json"))

    def steps(split_name):
        split = str(data / split_name)
        return {
            "datamodule": lambda: LesionDataModule(images, index, split, stats, augment=SETTINGS["augment"]),
            "channel_stats": lambda: channel_stats(images, index, split, out / "stats.json"),
            "metadata_model": lambda: fit_metadata_model(index, split, out / "metadata.json"),
            "cv_folds": lambda: make_folds(split, out / "folds.csv", k=3, seed=0),
            "augment_preview": lambda: augment_preview(
                images, index, split, out / "preview.png", settings=SETTINGS, seed=0
            ),
            "train": lambda: train_tier(
                "baseline_cnn",
                images=images,
                index=index,
                split=split,
                stats=stats,
                settings=TINY,
                seed=0,
                out_ckpt=str(out / "best.ckpt"),
                out_history=str(out / "history.csv"),
                out_run_id=None,
                work_dir=str(out / "work"),
                mlflow_cfg=None,
            ),
            "export": lambda: export_tier(
                str(ckpt), images, index, split, out / "model.onnx", out / "model.json", tier="baseline_cnn"
            ),
        }

    return steps


def test_every_development_step_refuses_the_full_split_table(sample_run, tmp_path):
    results = sample_run / "results"
    steps = development_steps(results / "data", tmp_path, results / "models" / "baseline_cnn" / "best.ckpt")
    for name, step in steps("split.csv").items():
        with pytest.raises(SealedTestError, match=r"split\.csv: 50 row\(s\) of split \['test'\]"):
            step()
        assert not any(tmp_path.iterdir()), f"{name} wrote {list(tmp_path.iterdir())} before refusing"


def dry_run_inputs(workdir) -> dict[str, set[str]]:
    """Every job of a forced dry run of the report and the selection targets: rule -> its input files."""
    proc = run_snakemake(workdir, "-n", "--forceall", *sample_args("--", "all", "results/selection/baseline_cnn.csv"))
    jobs = dry_run_jobs(proc.stdout + proc.stderr, "input")
    return {rule: {f for line in lines if line for f in line.split(", ")} for rule, lines in jobs.items()}


def test_only_the_evaluate_rules_read_the_full_split_table(tmp_path):
    inputs = dry_run_inputs(tmp_path)
    assert {"train", "cv_fold", "export", "evaluate", "metadata_model", "channel_stats"} <= set(inputs)
    assert {rule for rule, files in inputs.items() if "results/data/split.csv" in files} == {
        "evaluate",
        "evaluate_ensemble",
        "evaluate_deployed",
    }
    for rule in ("train", "export", "metadata_model", "channel_stats", "augment_preview", "cv_folds"):
        assert "results/data/development.csv" in inputs[rule], rule
    # Test predictions feed only what reports the evaluation, never a training or selection job.
    readers = {rule for rule, files in inputs.items() if any(f.endswith("_test.csv") for f in files)}
    assert readers == {"evaluate_ensemble", "evaluation_figures", "error_analysis", "model_card"}


def poison_test_rows(data, dest):
    """A copy of the data folder whose test images are noise and whose test labels and metadata are changed."""
    shutil.copytree(data, dest)
    split = pd.read_csv(data / "split.csv")
    test_ids = set(split.loc[split["split"] == "test", "image_id"])
    index = pd.read_csv(data / "index.csv")
    test = index["image_id"].isin(test_ids)
    shift = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    index.loc[test, "dx"] = index.loc[test, "dx"].map(shift)
    index.loc[test, "malignant"] = index.loc[test, "dx"].isin(MALIGNANT).astype(int)
    index.loc[test, ["age", "sex", "localization"]] = [85, "female", "scalp"]
    index.to_csv(dest / "index.csv", index=False)
    images = np.load(dest / "images.npy", mmap_mode="r+")
    rows = index.loc[test, "row"].to_numpy()
    images[rows] = np.random.default_rng(0).integers(0, 256, images[rows].shape, dtype=np.uint8)
    images.flush()
    return len(rows)


def test_development_outputs_do_not_depend_on_test_images_or_labels(sample_run, tmp_path):
    """Poisoned test rows change nothing the development side writes (same bytes, same weights)."""
    results = sample_run / "results"
    clean, poisoned = tmp_path / "clean", tmp_path / "poisoned"
    shutil.copytree(results / "data", clean)
    assert poison_test_rows(results / "data", poisoned) == 50
    outputs = {}
    for data in (clean, poisoned):
        out = data / "out"
        out.mkdir()
        steps = development_steps(data, out, out / "best.ckpt")("development.csv")
        for name in ("channel_stats", "metadata_model", "cv_folds", "augment_preview", "train", "export"):
            steps[name]()
        contract = json.loads((out / "model.json").read_text())
        outputs[data.name] = {
            **{f: (out / f).read_bytes() for f in ("stats.json", "metadata.json", "folds.csv", "preview.png")},
            "weights": weights_sha256(load_classifier(out / "best.ckpt").net),
            "history": pd.read_csv(out / "history.csv").filter(regex="^(train|val)/").to_dict("list"),
            "contract": {k: contract[k] for k in ("temperature", "operating_threshold", "threshold_selection")},
        }
    assert outputs["clean"] == outputs["poisoned"]
