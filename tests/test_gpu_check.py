"""benchmarks/gpu_check.py, the GPU check anyone can run, on the CPU with tiny settings."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, SAMPLE

# The whole check (data stage, two tiers trained twice) in a subprocess: in the slow layer.
pytestmark = pytest.mark.slow

# Run as on a bare GPU node: Snakemake and MLflow cannot be imported.
BARE = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(['snakemake', 'mlflow'])); "
    "sys.argv = ['gpu_check.py', *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')"
)


def test_gpu_check_runs_without_snakemake_or_mlflow_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--data", str(SAMPLE), "--out", str(out), "--cpu", "--epochs", "2", "--tiers", "baseline_cnn", "resnet"]
    args += ["--cache-size", "64", "--set", "image_size=32", "limit_train_batches=2"]
    args += ["baseline_cnn.model={widths: [8, 16], convs_per_block: 1, dropout: 0.2}"]
    args += ["resnet.model={widths: [8, 16], blocks_per_stage: [1, 1], stem_stride: 1, dropout: 0.2}"]
    code = BARE.format(script=str(ROOT / "benchmarks" / "gpu_check.py"))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["rerun_identical"] is True and result["epochs"] == 2
    assert set(result["tiers"]) == {"baseline_cnn", "resnet"}
    for tier in result["tiers"].values():
        assert tier["epochs"] == 2 and tier["median_epoch_s"] > 0 and 0 <= tier["data_wait_frac"] < 1
        assert tier["vs_cpu"] == {"device": "cpu", "max_abs_diff": 0.0, "same_dx": 1.0}
    assert result["hardware"]["cpu"] and result["data_stage_s"] >= 0
