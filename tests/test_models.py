"""The three tiers: shapes and gradients for both tasks, learning a fixed batch, reloading."""

import lightning as L
import pytest
import torch

from skinlesion.train.datamodule import class_names
from skinlesion.train.models import PretrainedWeightsError, build_transfer
from skinlesion.train.module import LesionClassifier, focal_loss, load_classifier

SMALL = {
    "baseline_cnn": {"widths": [8, 16, 32], "convs_per_block": 2, "dropout": 0.0},
    "resnet": {"widths": [8, 16, 32], "blocks_per_stage": [1, 2, 1], "stem_stride": 1, "dropout": 0.0},
    "transfer": {"backbone": "efficientnet_b0", "pretrained": False, "dropout": 0.0},
}


def classifier(tier: str, task: str = "multiclass", **kwargs) -> LesionClassifier:
    defaults = dict(mean=[0.7, 0.55, 0.57], std=[0.14, 0.16, 0.17], image_size=32, cache_size=32, channels_last=False)
    return LesionClassifier(tier=tier, model=SMALL[tier], class_names=class_names(task), **{**defaults, **kwargs})


@pytest.mark.parametrize("task", ["multiclass", "binary"])
@pytest.mark.parametrize("tier", list(SMALL))
def test_forward_backward_shapes(tier, task):
    torch.manual_seed(0)
    model = classifier(tier, task).train()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    logits = model(x)
    assert logits.shape == (4, 7 if task == "multiclass" else 2)
    y = torch.randint(0, logits.shape[1], (4,))
    model._loss(logits, y).backward()
    grads = [p.grad for p in model.net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    probs = torch.softmax(logits.detach(), 1)
    assert model.p_malignant(probs).shape == (4,)


# The transfer tier's EfficientNet takes minutes for its 60 steps on two cores: in the slow layer.
@pytest.mark.parametrize("tier", [pytest.param(t, marks=pytest.mark.slow) if t == "transfer" else t for t in SMALL])
def test_overfits_a_fixed_batch(tier):
    """A few steps on 16 fixed real-looking images drive the loss far below chance (ln 7 = 1.95)."""
    torch.manual_seed(0)
    model = classifier(tier).train()
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(16) % 7
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = model._loss(model(x), y)
        loss.backward()
        opt.step()
    assert float(loss) < 0.3, f"{tier}: loss {float(loss):.3f} after 60 steps"


def test_focal_loss_matches_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits, y = torch.randn(32, 7), torch.randint(0, 7, (32,))
    w = torch.rand(7) + 0.5
    ce = torch.nn.functional.cross_entropy(logits, y, weight=w)
    assert torch.allclose(focal_loss(logits, y, weight=w, gamma=0.0), ce, atol=1e-6)
    assert focal_loss(logits, y, gamma=2.0) < torch.nn.functional.cross_entropy(logits, y)


@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixup_cutmix_train_on_mixed_images_and_soft_labels(alphas, monkeypatch):
    torch.manual_seed(0)
    model = classifier("baseline_cnn", mixup_alpha=alphas[0], cutmix_alpha=alphas[1]).train()
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(8) % 7
    seen = {}
    model.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    real_loss = model._loss
    monkeypatch.setattr(model, "_loss", lambda logits, target: real_loss(logits, seen.setdefault("y", target)))
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    loss = model.training_step((x, y), 0)
    assert torch.isfinite(loss)
    # Class probabilities: each row sums to one and mixes two images' labels at most.
    assert seen["y"].shape == (8, 7) and torch.allclose(seen["y"].sum(1), torch.ones(8))
    assert ((seen["y"] > 0).sum(1) <= 2).all() and ((seen["y"] > 0).sum(1) == 2).any()
    assert not torch.equal(seen["x"], x.float())


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("logit_adjust", [False, True])
def test_malignant_loss_adds_the_bce_of_the_reported_malignant_probability(mixed, logit_adjust):
    """malignant_loss_weight adds w * BCE(p_malignant, malignant share of the label) to the loss,
    p_malignant from the unadjusted logits as at inference."""
    torch.manual_seed(0)
    prior = torch.rand(7) + 0.1
    prior = (prior / prior.sum()).tolist()
    kwargs = {"malignant_prior": prior, "class_prior": prior if logit_adjust else None}
    plain, weighted = (
        classifier("baseline_cnn", **kwargs),
        classifier("baseline_cnn", malignant_loss_weight=0.5, **kwargs),
    )
    logits, y = torch.randn(16, 7), torch.arange(16) % 7
    malignant = plain.is_malignant.float()
    if mixed:  # class probabilities, as MixUp/CutMix give them
        onehot = torch.nn.functional.one_hot(y, 7).float()
        y = 0.7 * onehot + 0.3 * onehot.roll(1, dims=0)
        target = y @ malignant
    else:
        target = malignant[y]
    p = plain.p_malignant(torch.softmax(logits, dim=1))
    bce = torch.nn.functional.binary_cross_entropy(p, target)
    assert bce > 0.1
    assert torch.allclose(weighted._loss(logits, y) - plain._loss(logits, y), 0.5 * bce, atol=1e-5)


def test_malignant_loss_refuses_the_binary_task():
    with pytest.raises(ValueError, match="malignant_loss_weight"):
        classifier("baseline_cnn", task="binary", malignant_loss_weight=1.0)


def test_mixing_refuses_the_focal_loss():
    with pytest.raises(ValueError, match="focal"):
        classifier("baseline_cnn", loss="focal", cutmix_alpha=1.0)


def test_reloaded_checkpoint_predicts_identically(tmp_path):
    torch.manual_seed(0)
    model = classifier("resnet", class_weights=[1.0] * 7)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(8) % 7), batch_size=4)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    model.eval()
    with torch.no_grad():
        before = model(x)
    reloaded = load_classifier(tmp_path / "m.ckpt")
    with torch.no_grad():
        after = reloaded(x)
    assert torch.equal(before, after)
    assert reloaded.hparams.image_size == 32 and reloaded.hparams.class_names == class_names("multiclass")


def test_pretrained_without_weights_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, on import; an earlier test may have imported it (timm
    # does), and then the download is tried, online, or offline until its connections time out.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsError, match="weights: package.*pretrained: false"):
        build_transfer(7, "efficientnet_b0", pretrained=True, weights="hub")
    with pytest.raises(PretrainedWeightsError, match="use package, hub, hf-hub"):
        build_transfer(7, "efficientnet_b0", pretrained=True, weights="somewhere")


@pytest.mark.parametrize(
    ("weights", "path"),
    [
        ("hub", "/timm/efficientnet_b0.ra_in1k/resolve/main/model.safetensors"),
        ("hf-hub:someone/b0-derm", "/someone/b0-derm/resolve/main/model.safetensors"),
    ],
)
def test_pretrained_weights_come_through_timm_from_the_hub(tmp_path, weights, path):
    """weights: hub (the backbone's default tag) or hf-hub:REPO: timm fetches the weights from the
    Hugging Face hub, here a stand-in on 127.0.0.1 (HF_ENDPOINT); the backbone is the hub's, only the
    head is new, and the checkpoint's record names the repository and the file's SHA-256."""
    import hashlib
    import json
    import os
    import subprocess
    import sys

    import timm
    from hf_hub_server import serve
    from safetensors.torch import load_file, save
    from timm.models import save_for_hf

    source = timm.create_model("efficientnet_b0", num_classes=1000)
    save_for_hf(source, str(tmp_path / "repo"), safe_serialization=True)
    blob = save(source.state_dict())
    config = (tmp_path / "repo" / "config.json").read_bytes()
    server, requests = serve({"model.safetensors": blob, "config.json": config})
    code = (
        "import sys, json; from safetensors.torch import save_file; "
        "from skinlesion.train.models import build_transfer; "
        "from skinlesion.train.weights import resolve, weights_provenance; "
        "m = build_transfer(7, 'efficientnet_b0', pretrained=True, weights=sys.argv[2]); "
        "save_file(m.state_dict(), sys.argv[1]); "
        "print(json.dumps(weights_provenance(resolve(sys.argv[2], 'efficientnet_b0'))))"
    )
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_CACHE": str(tmp_path)}
    env["HF_HUB_DISABLE_XET"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "loaded.safetensors"), weights],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        server.shutdown()
    assert ("GET", path) in requests
    loaded, expected = load_file(tmp_path / "loaded.safetensors"), source.state_dict()
    backbone = [k for k in loaded if not k.startswith("classifier.")]
    assert len(backbone) > 300 and all(torch.equal(loaded[k], expected[k]) for k in backbone)
    assert loaded["classifier.weight"].shape == (7, 1280)
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["source"] == "hf-hub:" + path.split("/resolve/")[0].lstrip("/")
    assert record["weights_sha256"] == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("tier", list(SMALL))
def test_no_pooling_without_a_deterministic_cuda_backward(tier):
    """nn.AdaptiveAvgPool2d's CUDA backward raises under deterministic training; every tier pools by a mean."""
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool

    from skinlesion.train.models import GlobalAvgPool, build_model

    net = build_model(tier, 7, SMALL[tier])
    modules = list(net.modules())
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in modules)
    assert any(isinstance(m, GlobalAvgPool | FastAdaptiveAvgPool) for m in modules)
