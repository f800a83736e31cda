"""Load test of the inference service on 127.0.0.1 with locust (bounded users and duration).

    python benchmarks/load_test.py --model results/export/baseline_cnn [--users 8 --duration 30s]

Starts ``skinlesion serve`` on a free port, runs ``benchmarks/locustfile.py`` headless against it,
and prints p50/p95/p99 latency, throughput and the error count (locust's and the service's own
Prometheus error counter, which must agree). ``--out`` writes them as JSON with the command,
hardware, date and commit (docs/benchmarks.md renders it).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/export/baseline_cnn")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=int, default=8)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads in the service")
    parser.add_argument("--out", type=Path, help="also write the result, with command and hardware, as JSON")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "skinlesion", "serve", "--model", args.model, "--port", str(port)]
    server = subprocess.Popen(
        [*serve, "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(120):
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            raise SystemExit("the service did not start")
        with tempfile.TemporaryDirectory() as tmp:
            prefix = Path(tmp) / "locust"
            subprocess.run(
                [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless"]
                + ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.duration, "--host", url]
                + ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
                check=False,
            )
            with open(f"{prefix}_stats.csv") as fh:
                total = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    finally:
        server.terminate()
        server.wait(timeout=30)
    service_errors = sum(float(v) for v in re.findall(r"^skinlesion_errors_total\{[^}]*\} (\S+)$", metrics, re.M))
    result = {
        "model": args.model,
        "users": args.users,
        "duration": args.duration,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "service_errors": int(service_errors),
        "throughput_rps": round(float(total["Requests/s"]), 1),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from skinlesion.io import atomic_path
        from skinlesion.provenance import git_commit, measurement

        command = "python benchmarks/load_test.py " + " ".join(sys.argv[1:])
        record = {"kind": "load_test"} | result | measurement(command, git_commit(ROOT))
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
