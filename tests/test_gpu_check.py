"""benchmarks/gpu_check.py, the GPU check anyone can run, on the CPU with tiny settings."""

import json
import runpy
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SAMPLE
from skinlesion.config import load_config, tier_settings
from skinlesion.train.models import build_model

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"

# Run as on a bare GPU node: Snakemake and MLflow cannot be imported.
BARE = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(['snakemake', 'mlflow'])); "
    "sys.argv = ['gpu_check.py', *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')"
)


def test_gpu_check_makes_the_transfer_tiers_weights_folder_on_a_bare_node(tmp_path, monkeypatch):
    """A bare node has no results/weights/: the check converts the packaged ImageNet weights as the
    pretrained_weights rule does, where the training reads them, and the transfer tier then builds
    from them; a tier without packaged weights needs nothing."""
    from safetensors.torch import load_file

    prepare_weights = runpy.run_path(str(GPU_CHECK))["prepare_weights"]
    monkeypatch.chdir(tmp_path)
    train = load_config()["train"]
    settings = tier_settings(train, "transfer")
    assert settings["model"]["pretrained"] and settings["model"]["weights"] == "package"
    folder = prepare_weights(settings)
    assert folder.resolve() == tmp_path / "results" / "weights" / settings["model"]["backbone"]
    assert (folder / "config.json").is_file()
    net = build_model("transfer", 7, settings["model"])
    assert torch.equal(net.conv_stem.weight, load_file(folder / "model.safetensors")["conv_stem.weight"])
    made = (folder / "model.safetensors").stat().st_mtime_ns
    assert prepare_weights(settings) == folder and (folder / "model.safetensors").stat().st_mtime_ns == made
    assert prepare_weights(tier_settings(train, "baseline_cnn")) is None


# The whole check (data stage, every tier, the first trained twice) in a subprocess, from an empty
# directory as on a bare node: in the slow layer.
@pytest.mark.slow
def test_gpu_check_runs_without_snakemake_or_mlflow_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--data", str(SAMPLE), "--out", str(out), "--cpu", "--epochs", "2"]
    args += ["--tiers", "baseline_cnn", "resnet", "transfer"]
    args += ["--cache-size", "64", "--set", "image_size=32", "limit_train_batches=2"]
    args += ["baseline_cnn.model={widths: [8, 16], convs_per_block: 1, dropout: 0.2}"]
    args += ["resnet.model={widths: [8, 16], blocks_per_stage: [1, 1], stem_stride: 1, dropout: 0.2}"]
    code = BARE.format(script=str(GPU_CHECK))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["rerun_identical"] is True and result["epochs"] == 2
    assert set(result["tiers"]) == {"baseline_cnn", "resnet", "transfer"}
    backbone = tier_settings(load_config()["train"], "transfer")["model"]["backbone"]
    assert (tmp_path / "results" / "weights" / backbone / "model.safetensors").is_file()
    for tier in result["tiers"].values():
        assert tier["epochs"] == 2 and tier["median_epoch_s"] > 0 and 0 <= tier["data_wait_frac"] < 1
        assert tier["vs_cpu"] == {"device": "cpu", "max_abs_diff": 0.0, "same_dx": 1.0}
    assert result["hardware"]["cpu"] and result["data_stage_s"] >= 0
