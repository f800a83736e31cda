"""Training throughput per tier on the preprocessed cache: images/s, data-wait share, peak memory.

    python benchmarks/train_throughput.py --data results/data --batches 40 [--repeats 3] [--tiers T ...] [--out FILE]

Runs each tier in its own process with the workflow's default settings (workflow_config.yaml,
overridable with --set key=value on the train section, e.g. --set num_workers=0) for one
epoch of --batches batches without validation, once per augmentation path (--paths: "worker",
per image in the DataLoader workers, and "device", on each batch where the model trains), and
prints one row per tier and path: images/s, the share of step time the loop waited for the
DataLoader ("data wait"), the share spent on the batched augmentation in the main process
("batch aug.") and peak memory. The first --warmup batches are excluded from the rate; with --repeats
each row is the run of median speed, with every run's rate beside it. --out
writes the rows as JSON with the command, hardware, date and commit.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(tier: str, data: Path, batches: int, warmup: int, overrides: dict, path: str) -> dict:
    import lightning as L
    import torch

    from skinlesion.config import load_config, tier_settings
    from skinlesion.train.fit import build, resolve_precision, time_training_steps

    config = load_config()
    settings = {**tier_settings(config["train"], tier), **overrides}
    settings["augment"] = {**settings["augment"], "on_device": path == "device"}
    L.seed_everything(0, workers=True)
    files = {"images": "images.npy", "index": "index.csv", "split": "development.csv", "stats": "norm_stats.json"}
    dm, model = build(tier, settings, **{name: str(data / f) for name, f in files.items()})

    timer = time_training_steps(dm, model, settings, batches)
    wait, jitter, busy = (sum(times[warmup:]) for times in (timer.wait, timer.jitter, timer.busy))
    steps = len(timer.busy) - warmup
    peak_mb = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ) / 1024
    return {
        "tier": tier,
        "path": path,
        "image_size": settings["image_size"],
        "precision": resolve_precision(settings["precision"], settings["accelerator"]),
        "num_workers": dm.num_workers,
        "images_per_s": round(steps * settings["batch_size"] / (wait + jitter + busy), 1),
        "data_wait_pct": round(100 * wait / (wait + jitter + busy), 1),
        "batch_augment_pct": round(100 * jitter / (wait + jitter + busy), 1),
        "peak_rss_mb": round(peak_mb),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="results/data", help="folder with images.npy, index.csv, split.csv")
    parser.add_argument("--tiers", nargs="+", default=["baseline_cnn", "resnet", "transfer"])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="train settings to override, key=value (YAML values)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per tier and path; the median run is kept")
    parser.add_argument("--paths", nargs="+", default=["worker", "device"], choices=["worker", "device"])
    parser.add_argument("--out", type=Path, help="also write the rows, with command and hardware, as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.one:
        print(json.dumps(measure(args.one, Path(args.data), args.batches, args.warmup, overrides, args.path)))
        return
    print(
        f"{'tier':14s} {'path':>6s} {'size':>4s} {'precision':>10s} {'workers':>7s} "
        f"{'img/s':>7s} {'data wait %':>11s} {'batch aug. %':>12s} {'peak MB':>8s}"
    )
    rows = []
    for tier in args.tiers:
        for path in args.paths:
            cmd = [sys.executable, __file__, "--one", tier, "--path", path, "--data", args.data]
            cmd += ["--batches", str(args.batches), "--warmup", str(args.warmup), "--set", *args.set]
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                runs.append(json.loads(out))
            # The run of median speed stands for all; every run's rate is kept beside it.
            r = sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]
            r["runs"] = [run["images_per_s"] for run in runs]
            rows.append(r)
            print(
                f"{r['tier']:14s} {r['path']:>6s} {r['image_size']:4d} {r['precision']:>10s} {r['num_workers']:7d} "
                f"{r['images_per_s']:7.1f} {r['data_wait_pct']:11.1f} {r['batch_augment_pct']:12.1f} "
                f"{r['peak_rss_mb']:8d}",
                flush=True,
            )
    if args.out:
        record(args.out, rows, sys.argv)


def record(dest: Path, rows: list[dict], argv: list[str]) -> None:
    from skinlesion.io import atomic_path
    from skinlesion.provenance import git_commit, measurement

    command = "python benchmarks/train_throughput.py " + " ".join(argv[1:])
    result = {"kind": "train_throughput", "rows": rows, **measurement(command, git_commit(ROOT))}
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
