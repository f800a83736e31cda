# Config validation and the helpers the rules share.

import re
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# The workflow imports the skinlesion package straight from src/; rule scripts find it through
# the scripts/skinlesion link (Snakemake puts a script's folder on its path), so no environment
# (pip, conda, container, cluster node) needs the package installed.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

# Only modules that import nothing heavy at module level (no numpy, pandas, torch): the parse
# runs wherever Snakemake does, an HPC login node included (tests/test_light_imports.py).
from skinlesion.config import (  # noqa: E402
    DEFAULT,
    ConfigError,
    check_config,
    data_files,
    tier_settings,
    typed_config,
    use_own_executables,
    variant_settings,
)
from skinlesion.train.weights import package_folder  # noqa: E402

# A nested --config value ('export={quantize: true}') arrives as strings; type it by the schema.
config.update(typed_config(config))
validate(config, schema="../schemas/config.schema.yaml")

check_config(config)
# Without conda or a container, jobs run the executables of the environment that runs Snakemake
# (nbconvert for the notebook rules), activated or not; a missing one stops the workflow now.
missing = use_own_executables([] if workflow.deployment_settings.deployment_method else ["jupyter", "jupyter-nbconvert"])
if missing:
    raise WorkflowError(missing)

FILES = data_files(config)
RESULTS = "results"
RAW = "results/raw"
DATA = "results/data"
LOGS = "results/logs"
MODELS = "results/models"
EXPORT = "results/export"
FIGURES = "results/figures"
METRICS = "results/metrics"
PREDICTIONS = "results/predictions"
BENCHMARKS = "results/benchmarks"
SELECTION = "results/selection"
TIERS = config["train"]["tiers"]
# One line per scoring of the test split, appended by the rules that score it (not a rule output).
LEDGER = f"{RESULTS}/test_ledger.csv"

# The preprocessed cache with the development split table (train and val rows only): what
# training, selection, thresholds, calibration and the metadata model read (docs/evaluation.md).
DEVELOPMENT = {
    "images": f"{DATA}/images.npy",
    "index": f"{DATA}/index.csv",
    "split": f"{DATA}/development.csv",
    "stats": f"{DATA}/norm_stats.json",
}
# The same with the full split table: the evaluate rules' (evaluate, evaluate_ensemble,
# evaluate_deployed), the only ones that read the test rows.
CACHE = {**DEVELOPMENT, "split": f"{DATA}/split.csv"}
# GPUs each train job asks for (0 when training is pinned to the CPU).
TRAIN_GPUS = 0 if config["train"]["accelerator"] == "cpu" else config["train"]["devices"]
# The same request for IBM LSF (snakemake-executor-plugin-lsf ignores the gpu resource).
LSF_GPU_REQUEST = f'-gpu "num={TRAIN_GPUS}:mode=exclusive_process"' if TRAIN_GPUS else ""

DATA_OUTPUTS = [
    f"{DATA}/checksums.csv",
    f"{DATA}/split.csv",
    f"{DATA}/split_counts.csv",
    f"{DATA}/norm_stats.json",
]
TRAIN_OUTPUTS = [f"{FIGURES}/augment_preview.png"] + [
    f"{MODELS}/{tier}/best.ckpt" for tier in TIERS
]
EXPORT_OUTPUTS = [f"{EXPORT}/{tier}/model.json" for tier in TIERS]
EVAL_OUTPUTS = [
    f"{FIGURES}/{tier}/{name}.png"
    for tier in TIERS
    for name in ("confusion", "roc", "reliability")
]


def selection_variants(tier):
    """The selection variants of a tier: its own settings first, then the configured ones."""
    return [DEFAULT, *config["selection"]["variants"].get(tier, {})]


def pretrained_weights(settings):
    """The converted weights folder a training with these settings starts from, as an input
    (``weights: package``; nothing for the other sources, which timm reads itself)."""
    model = settings["model"]
    if model.get("pretrained") and model.get("weights") == "package":
        return {"weights": package_folder(RESULTS, model["backbone"])}
    return {}


def raw(name):
    return f"{RAW}/{name}"


def external_test():
    """Images and ground truth of the external test set, or None when none is configured."""
    folder = config.get("external_test_dir")
    if folder:
        folder = Path(folder)
        truth = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".csv", ".tab"))
        if len(truth) != 1:
            raise ConfigError(f"external_test_dir: {folder} must hold exactly one ground-truth CSV, found {len(truth)}")
        archive = folder / "ISIC2018_Task3_Test_Images.zip"
        return {"images": str(archive if archive.exists() else folder), "ground_truth": str(truth[0])}
    if config["external_test"]["download"] and not config.get("data_dir"):
        return {
            "images": raw("ISIC2018_Task3_Test_Images.zip"),
            "ground_truth": raw("ISIC2018_Task3_Test_GroundTruth.csv"),
        }
    return None


EXTERNAL = external_test()


def file_spec(wildcards):
    return asdict(FILES[wildcards.file])
