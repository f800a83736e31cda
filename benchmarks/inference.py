"""Inference speed per exported tier: PyTorch eager vs ONNX Runtime on the CPU, at equal outputs.

    python benchmarks/inference.py --run-dir /path/to/workdir [--tiers baseline_cnn ...] [--out bench.json]

``--run-dir`` is a workflow directory after ``results/export/*`` exist. Inputs are real images:
validation rows of the run's cache, preprocessed exactly as the service does. For each tier it
reports the median single-image latency (batch of 1, ``--single`` calls) and the median batch
throughput (``--batch`` images per call, ``--repeats`` calls) of

- PyTorch eager: the checkpoint in fp32 with its temperature (what ``Deployed`` exports), and
- ONNX Runtime: the exported file through :class:`skinlesion.inference.OnnxClassifier`,

both with the same number of threads, and the largest absolute difference of their probabilities.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from skinlesion.serve.export import Deployed
from skinlesion.serve.inference import OnnxClassifier, to_input
from skinlesion.tables import load_development_table
from skinlesion.train.module import load_classifier


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
    model = Deployed(load_classifier(run_dir / contract["checkpoint"]).float(), contract["temperature"] or 1.0).eval()
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
    results["onnx_single_ms"] = timed(lambda: clf.probabilities(single), args.single, 10)
    results["onnx_batch_s"] = timed(lambda: clf.probabilities(batch), args.repeats, 2)
    diff = float(np.abs(clf.probabilities(batch) - eager_probs).max())
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "tier": tier,
        "input": clf.input_size,
        "eager_single_ms": round(med["eager_single_ms"] * 1e3, 2),
        "onnx_single_ms": round(med["onnx_single_ms"] * 1e3, 2),
        "eager_img_per_s": round(len(batch) / med["eager_batch_s"], 1),
        "onnx_img_per_s": round(len(batch) / med["onnx_batch_s"], 1),
        "throughput_ratio": round(med["eager_batch_s"] / med["onnx_batch_s"], 2),
        "latency_ratio": round(med["eager_single_ms"] / med["onnx_single_ms"], 2),
        "max_abs_diff": diff,
    }


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
    rows = [bench_tier(args.run_dir, tier, args) for tier in args.tiers]
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
