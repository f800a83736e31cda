"""Where a result came from: git commit, config hash, seed, package versions, data checksums.

:func:`result_provenance` is embedded in every result file (metrics JSON, export sidecar, MLflow
run tags). It holds nothing that changes between two runs of the same commit and config on the
same data, so reruns stay byte-identical. :func:`run_provenance` adds what the report shows about
the machine and the time of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = [
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "numpy",
    "pandas",
    "scikit-learn",
    "snakemake",
    "onnx",
    "onnxruntime",
]


def git_commit(workflow_dir: str | os.PathLike) -> str:
    """HEAD of the workflow's checkout, marked when tracked files have uncommitted changes.

    Without a git checkout (a container image), the SKINLESION_GIT_COMMIT environment variable.
    """

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=workflow_dir, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    commit = git("rev-parse", "HEAD")
    if commit == "unknown":
        return os.environ.get("SKINLESION_GIT_COMMIT", "unknown")
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return commit


# Where things are, not what is computed: the data's identity is in its checksums instead, so a
# reviewer with the data in another folder gets the same hash (and byte-identical results).
LOCATION_KEYS = ("data_dir", "external_test_dir", "mlflow")


def config_hash(config: dict) -> str:
    """SHA-256 (16 hex digits) of the resolved config, location keys left out."""
    relevant = {k: v for k, v in config.items() if k not in LOCATION_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def result_provenance(config: dict, workflow_dir: str | os.PathLike, checksums_csv: str | os.PathLike) -> dict:
    return {
        "git_commit": git_commit(workflow_dir),
        "config_sha256": config_hash(config),
        "seed": config["seed"],
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "data_checksums": {r["file"]: r["md5"] for r in pd.read_csv(checksums_csv).to_dict("records")},
    }


def job_provenance(smk) -> dict:
    """:func:`result_provenance` inside a Snakemake ``script:`` job (its rule has a ``checksums`` input)."""
    return result_provenance(smk.config, Path(smk.scriptdir).parent, smk.input.checksums)


def cpu_description() -> str:
    """The CPU model, its logical cores and whether it has native bf16 (AMX or AVX512-BF16), which
    decides what ``precision: auto`` trains in and so the speed and the bits of a CPU run."""
    cpu, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    bf16 = "native bf16 (AMX)" if "amx_bf16" in flags else "native bf16" if "avx512_bf16" in flags else "no native bf16"
    return f"{cpu}, {os.cpu_count()} logical cores, {bf16}"


def measurement(command: str, commit: str, when: datetime | None = None) -> dict:
    """What a results file under benchmarks/results/ records of its measurement (the docs render it)."""
    return {
        "command": command,
        "hardware": cpu_description(),
        "date": (when or datetime.now(UTC)).strftime("%Y-%m-%d"),
        "commit": commit,
    }


def run_provenance(config: dict, workflow_dir: str | os.PathLike, checksums_csv: str | os.PathLike) -> dict:
    """Everything in :func:`result_provenance`, plus the time, platform and hardware of this run."""
    import torch

    return result_provenance(config, workflow_dir, checksums_csv) | {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
