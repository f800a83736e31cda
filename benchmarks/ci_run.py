"""`.ci/run` from a fresh clone, timed: the install (apt tools, .venv) and the whole test suite.

    python benchmarks/ci_run.py [--reset-podman] [--log FILE] [--out FILE]

Clones the checkout's HEAD beside it (so ``../shared`` is beside the clone, as in CI), runs
``bash .ci/run`` there and removes the clone. The clone starts with no .venv and no wheelhouse;
--reset-podman (``podman system reset``: every image, container and layer of this host's podman is
deleted) also takes away the container test's base image and layer cache. The apt packages .ci/run
installs stay installed if present: which ones were is recorded. --log keeps .ci/run's output;
--out writes the wall time, the install part, pytest's counts and time, with the command, hardware,
date and commit, as JSON (docs/development.md renders it).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("chromium", "podman", "mmdebstrap")  # what .ci/run installs with apt when missing
SUMMARY = re.compile(r"^=+ (?P<counts>.*?) in (?P<seconds>[\d.]+)s\b.* =+$", re.MULTILINE)


def pytest_summary(log: str) -> dict:
    """Counts (passed, failed, skipped, ...) and seconds from pytest's last summary line."""
    matches = list(SUMMARY.finditer(log))
    if not matches:
        raise ValueError('no pytest summary line ("=== N passed ... in S s ===") in the output of .ci/run')
    last = matches[-1]
    counts = {}
    for part in last["counts"].split(", "):
        number, _, what = part.partition(" ")
        counts[what] = int(number)
    return {"counts": counts, "pytest_s": float(last["seconds"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset-podman", action="store_true", help="podman system reset first (deletes all images)")
    parser.add_argument("--log", type=Path, help="keep the output of .ci/run here")
    parser.add_argument("--out", type=Path, help="also write the times, with command and hardware, as JSON")
    args = parser.parse_args()
    from skinlesion.provenance import git_commit, measurement

    commit = git_commit(ROOT)
    if " " in commit:  # "(with uncommitted changes)"
        sys.exit(f"{ROOT} has uncommitted changes: the clone would not test them; commit first")
    if not (ROOT.parent / "shared").is_dir():
        sys.exit(f"{ROOT.parent / 'shared'} is missing: .ci/run needs ../shared beside the clone")
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "docker" / "containers.conf")}
    if args.reset_podman and shutil.which("podman"):
        subprocess.run(["podman", "system", "reset", "--force"], env=env, check=True, capture_output=True)
    preinstalled = [tool for tool in TOOLS if shutil.which(tool)]
    with tempfile.TemporaryDirectory(prefix="ci-clone-", dir=ROOT.parent) as clone:  # beside ../shared
        subprocess.run(["git", "clone", "--quiet", str(ROOT), clone], check=True)
        start = time.perf_counter()
        proc = subprocess.run(["bash", ".ci/run"], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if args.log:
        args.log.write_text(output)
    if proc.returncode != 0:
        sys.exit(f".ci/run failed ({proc.returncode}) after {wall:.0f} s:\n{output[-4000:]}")
    summary = pytest_summary(output)
    print(f".ci/run: {wall:.0f} s, pytest {summary['pytest_s']:.0f} s, {summary['counts']}")
    if args.out:
        from skinlesion.io import atomic_path

        record = {
            "kind": "ci_run",
            "wall_s": round(wall, 1),
            "install_s": round(wall - summary["pytest_s"], 1),
            **summary,
            "preinstalled": preinstalled,
            "podman_reset": args.reset_podman,
            "cores": os.cpu_count(),
        }
        command = "python benchmarks/ci_run.py " + " ".join(sys.argv[1:])
        with atomic_path(args.out) as out:
            out.write_text(json.dumps(record | measurement(command, commit), indent=1) + "\n")


if __name__ == "__main__":
    main()
