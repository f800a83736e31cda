"""Inference speed per exported tier: PyTorch eager vs ONNX Runtime on the CPU, at equal outputs.

    python benchmarks/inference.py --run-dir /path/to/workdir [--tiers baseline_cnn ...] [--out bench.json]

``--run-dir`` is a workflow directory after ``results/export/*`` exist. Inputs are real images:
validation rows of the run's cache, preprocessed exactly as the service does. For each tier it
reports the median single-image latency (batch of 1, ``--single`` calls) and the median batch
throughput (``--batch`` images per call, ``--repeats`` calls) of

- PyTorch eager: the checkpoint in fp32 with its temperature (what ``Deployed`` exports), and
- ONNX Runtime: the exported file through :class:`skinlesion.inference.OnnxClassifier`, and its
  static int8 model where the export made one (``export.quantize``),

all with the same number of threads, the largest absolute difference of their probabilities, and
for int8 the validation scores its contract states beside the fp32 model's. ``--out`` writes the
rows as JSON with the command, hardware, date and commit (docs/benchmarks.md renders it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skinlesion.serve.export import Deployed
from skinlesion.serve.inference import OnnxClassifier, to_input
from skinlesion.tables import load_development_table
from skinlesion.train.module import load_classifier

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_tier(run_dir: Path, tier: str, args) -> dict:
    export = run_dir / "results" / "export" / tier
    clf = OnnxClassifier(export, threads=args.threads)
    contract = clf.contract
    checkpoint = load_classifier(run_dir / contract["checkpoint"]).float()
    model = Deployed(checkpoint, contract["temperature"] or 1.0, contract["class_prior"]).eval()
    data = run_dir / "results" / "data"
    table = load_development_table(data / "index.csv", data / "development.csv")
    rows = table.loc[table["split"] == "val", "row"].to_numpy()[: args.batch]
    cache = np.load(data / "images.npy", mmap_mode="r")
    batch = np.stack([to_input(np.asarray(cache[r]), clf.input_size) for r in rows])
    single = batch[:1]
    x_batch, x_single = torch.from_numpy(batch), torch.from_numpy(single)

    with torch.inference_mode():
        eager_probs = model(x_batch)[1].numpy()

        def eager(x):
            return lambda: model(x)

        results = {
            "eager_single_ms": timed(eager(x_single), args.single, 10),
            "eager_batch_s": timed(eager(x_batch), args.repeats, 2),
        }
    engines = {"onnx": clf}
    if "int8" in contract:
        engines["int8"] = OnnxClassifier(export, threads=args.threads, precision="int8")
    for name, engine in engines.items():
        results[f"{name}_single_ms"] = timed(lambda e=engine: e.probabilities(single), args.single, 10)
        results[f"{name}_batch_s"] = timed(lambda e=engine: e.probabilities(batch), args.repeats, 2)
    med = {k: statistics.median(v) for k, v in results.items()}
    row = {
        "tier": tier,
        "input": clf.input_size,
        "images": len(batch),
        "eager_single_ms": round(med["eager_single_ms"] * 1e3, 2),
    }
    row["eager_img_per_s"] = round(len(batch) / med["eager_batch_s"], 1)
    for name, engine in engines.items():
        row[f"{name}_single_ms"] = round(med[f"{name}_single_ms"] * 1e3, 2)
        row[f"{name}_img_per_s"] = round(len(batch) / med[f"{name}_batch_s"], 1)
        row[f"{name}_throughput_ratio"] = round(med["eager_batch_s"] / med[f"{name}_batch_s"], 2)
        row[f"{name}_latency_ratio"] = round(med["eager_single_ms"] / med[f"{name}_single_ms"], 2)
        row[f"{name}_max_abs_diff"] = float(np.abs(engine.probabilities(batch) - eager_probs).max())
    if "int8" in contract:
        row["int8_validation"] = contract["int8"]["validation"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--tiers", nargs="+", default=["baseline_cnn", "resnet", "transfer"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines (default: %(default)s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for tier in args.tiers:
        rows.append(bench_tier(args.run_dir, tier, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "int8_validation"}), flush=True)
    if args.out:
        from skinlesion.io import atomic_path
        from skinlesion.provenance import git_commit, measurement

        command = "python benchmarks/inference.py " + " ".join(sys.argv[1:])
        record = {"kind": "inference", "threads": args.threads, "rows": rows, **measurement(command, git_commit(ROOT))}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
