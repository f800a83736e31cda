"""The container image: build times cold and warm, its size, and the bundled-sample workflow inside it
against the same workflow run natively.

    python benchmarks/containers.py --base "$(docker/local-base.sh)" [--repeats 1] [--out FILE]

Cold: the wheelhouse and the image built with no layer cache (the base image exists). Warm: the
rebuild after a one-line source change, with the layer cache of the cold build (only the project
layers are rebuilt). The workflow times are the median of --repeats runs each, native and
containerised alternating. --out writes them as JSON with the command, hardware, date and commit
(docs/benchmarks.md renders it).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "docker" / "containers.conf"))}
IMAGE = "localhost/skinlesion-benchmark"


def timed(cmd: list[str], **kwargs) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def build(context: Path, wheelhouse: Path, base: str, commit: str, *extra: str) -> float:
    return timed([
        "podman", "build", *extra, "-f", str(context / "docker" / "Dockerfile"),
        "--build-context", f"wheels={wheelhouse}", "--build-arg", f"BASE={base}",
        "--build-arg", f"SKINLESION_GIT_COMMIT={commit}", "-t", IMAGE, str(context),
    ])  # fmt: skip


def project_copy(dest: Path) -> Path:
    """The files a build context holds (tracked and untracked, not ignored), outside the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base image (docker/local-base.sh prints a local one)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the times, with command and hardware, as JSON")
    args = parser.parse_args()
    from skinlesion.provenance import git_commit, measurement

    commit, load = git_commit(ROOT), os.getloadavg()[0]
    (ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        tmp = Path(tmp)
        wheelhouse = tmp / "wheelhouse"
        lock = ROOT / "requirements.lock"
        wheels = timed([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-r", str(lock),
                        "setuptools>=68", "-w", str(wheelhouse)])  # fmt: skip
        print(f"wheelhouse: {wheels:.0f} s", flush=True)
        context = project_copy(tmp / "context")
        subprocess.run(["podman", "rmi", "--force", "--ignore", IMAGE], env=ENV, capture_output=True)
        cold = build(context, wheelhouse, args.base, commit, "--no-cache")
        print(f"cold build: {cold:.0f} s", flush=True)
        with (context / "src" / "skinlesion" / "__init__.py").open("a") as f:
            f.write("# a source change\n")
        warm = build(context, wheelhouse, args.base, commit)
        print(f"warm build after a source change: {warm:.0f} s", flush=True)
        size = json.loads(subprocess.run(["podman", "image", "inspect", IMAGE], env=ENV, capture_output=True,
                                         text=True, check=True).stdout)[0]["Size"]  # fmt: skip

        native, contained = [], []
        for i in range(args.repeats):
            work = tmp / f"native{i}"
            native.append(timed([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work),
                                 "--profile", str(ROOT / "profiles" / "sample"),
                                 "--config", f"data_dir={ROOT / 'data' / 'sample'}"], cwd=ROOT))  # fmt: skip
            results = tmp / f"container{i}"
            results.mkdir()
            results.chmod(0o777)
            contained.append(timed(["podman", "run", "--rm", "-v", f"{results}:/skinlesion/results", IMAGE]))
            print(f"sample workflow: native {native[-1]:.0f} s, in the image {contained[-1]:.0f} s", flush=True)
        subprocess.run(["podman", "rmi", "--force", IMAGE], env=ENV, capture_output=True)

    if args.out:
        from skinlesion.io import atomic_path

        command = "python benchmarks/containers.py " + " ".join(sys.argv[1:])
        record = {
            "kind": "containers",
            "base": args.base,
            "image_bytes": size,
            "wheelhouse_s": round(wheels, 1),
            "cold_build_s": round(cold, 1),
            "warm_build_s": round(warm, 1),
            "sample_workflow_native_s": [round(t, 1) for t in native],
            "sample_workflow_container_s": [round(t, 1) for t in contained],
            "load_average_at_start": round(load, 2),
        }
        with atomic_path(args.out) as out:
            out.write_text(json.dumps(record | measurement(command, commit), indent=1) + "\n")
    print(f"image {size / 1e9:.2f} GB; sample workflow median: native {statistics.median(native):.0f} s, "
          f"in the image {statistics.median(contained):.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
