"""Wall time of the whole data stage (download/copy, checksum, preprocess, split, stats) from scratch.

    python benchmarks/data_stage.py --data-dir ../shared/data/ham10000 --repeats 3 [--out FILE]

Each repeat runs Snakemake in a fresh working directory; prints every time and the median. --out
writes them as JSON with the command, hardware, date and commit (docs/benchmarks.md renders it).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the times, with command and hardware, as JSON")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as workdir:
            cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", workdir]
            cmd += ["--cores", str(args.cores), "--quiet", "all", "--config", f"data_dir={data_dir}", "--", "data"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            print(f"run {len(times)}: {times[-1]:.1f} s", flush=True)
    print(
        f"data stage on {data_dir} with {args.cores} cores: "
        f"median {statistics.median(times):.1f} s over {len(times)} runs"
    )
    if args.out:
        from skinlesion.io import atomic_path
        from skinlesion.provenance import git_commit, measurement

        command = "python benchmarks/data_stage.py " + " ".join(sys.argv[1:])
        record = {"kind": "data_stage", "cores": args.cores, "seconds": [round(t, 1) for t in times]}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(record | measurement(command, git_commit(ROOT)), indent=1) + "\n")


if __name__ == "__main__":
    main()
