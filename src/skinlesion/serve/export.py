"""The export rule: a tier's best checkpoint to one ONNX file plus its JSON inference contract.

The exported graph takes float32 (N, 3, n, n) RGB pixels in 0-255 (any N) and returns the
logits and the class probabilities softmax(logits / T). Normalisation is inside the graph. On
the validation split, with the deployed preprocessing (:mod:`skinlesion.serve.inference`) and no TTA,
the export:

1. fits the temperature T by minimising the negative log-likelihood (Guo et al., 2017) of the
   population probabilities (the class probabilities reweighted by the checkpoint's class prior,
   as p_malignant is) when ``calibrate`` is set, else T = 1;
2. checks that ONNX Runtime and PyTorch agree (max abs difference of the probabilities below
   ``tolerance``) and fails otherwise;
3. chooses the operating threshold on the malignant probability exactly as the evaluate rule
   does (the highest one reaching the target sensitivity), for the probabilities the deployed
   model will actually give.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import torch

from skinlesion import MALIGNANT, malignant_probability
from skinlesion.evaluate.metrics import sens_spec, threshold_for_sensitivity
from skinlesion.io import atomic_path
from skinlesion.serve.inference import CONTRACT_FORMAT, to_input
from skinlesion.tables import load_development_table
from skinlesion.train.module import LesionClassifier, load_classifier

log = logging.getLogger(__name__)
OPSET = 18


class Deployed(torch.nn.Module):
    """The classifier with its temperature: image -> (logits, probabilities)."""

    def __init__(self, model: LesionClassifier, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature))

    def forward(self, image: torch.Tensor):
        logits = self.model(image).float()
        return logits, torch.softmax(logits * self.inv_temperature, dim=1)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, prior=None) -> float:
    """The temperature minimising the NLL of softmax(logits / T) on held-out data.

    ``prior``: the class frequencies of a model trained under a uniform prior (its checkpoint's
    ``malignant_prior``). The NLL is then that of the population probabilities the product reports,
    softmax(logits / T) reweighted by the prior, against the population's labels; fitted on the
    class columns alone, T would mostly absorb the prior shift instead of the miscalibration."""
    log_prior = torch.zeros(()) if prior is None else torch.tensor(prior, dtype=logits.dtype).log()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp() + log_prior, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def _inputs(images_npy: str, rows: np.ndarray, input_size: int) -> np.ndarray:
    cache = np.load(images_npy, mmap_mode="r")
    return np.stack([to_input(np.asarray(cache[r]), input_size) for r in rows])


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a network's weights (names, dtypes, shapes, values). Unlike the checkpoint file's
    hash it is the same for a rerun: Lightning checkpoints also record run-specific paths."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_tier(
    ckpt: str,
    images_npy: str,
    index_csv: str,
    split_csv: str,
    out_onnx: str | os.PathLike,
    out_contract: str | os.PathLike,
    *,
    tier: str,
    target_sensitivity: float = 0.95,
    calibrate: bool = True,
    tolerance: float = 1e-4,
    provenance: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Export one tier; returns the contract written to ``out_contract``. ``device`` runs the PyTorch
    side (temperature fit, the reference of the parity check) there, in fp32 without TF32; the ONNX
    graph is always traced on the CPU, and ONNX Runtime runs on the CPU, as the service does."""
    import onnxruntime as ort

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = load_classifier(ckpt, device).float()
    hp = model.hparams
    table = load_development_table(index_csv, split_csv)
    val = table[table["split"] == "val"]
    x_val = torch.from_numpy(_inputs(images_npy, val["row"].to_numpy(), hp.image_size))
    with torch.no_grad():
        logits = torch.cat([model(b.to(model.device)).float().cpu() for b in x_val.split(256)])
    if model.binary:
        labels, malignant_classes = torch.tensor(val["malignant"].to_numpy()), ["malignant"]
    else:
        labels = torch.tensor(val["dx"].map({c: i for i, c in enumerate(hp.class_names)}).to_numpy())
        malignant_classes = list(MALIGNANT)
    prior = None if model.binary else hp.get("malignant_prior")
    temperature = fit_temperature(logits, labels, prior) if calibrate else 1.0
    log.info("%s: temperature %.3f on %d validation images", tier, temperature, len(val))

    deployed = Deployed(model, temperature).eval()
    with torch.no_grad():
        torch_probs = np.concatenate([deployed(b.to(model.device))[1].cpu().numpy() for b in x_val.split(256)])
    deployed = deployed.cpu()
    with atomic_path(out_onnx) as tmp:
        program = torch.onnx.export(
            deployed,
            (x_val[:2],),
            input_names=["image"],
            output_names=["logits", "probabilities"],
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
        program.save(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        ort_probs = np.concatenate([session.run(["probabilities"], {"image": b.numpy()})[0] for b in x_val.split(256)])
        diff = float(np.abs(ort_probs - torch_probs).max())
        if not diff < tolerance:
            raise RuntimeError(f"{out_onnx}: ONNX Runtime and PyTorch differ by {diff:.2e} (tolerance {tolerance:.0e})")

    p_malignant = ort_probs[:, 1] if model.binary else malignant_probability(ort_probs, prior)
    y_malignant = val["malignant"].to_numpy().astype(bool)
    threshold = threshold_for_sensitivity(y_malignant, p_malignant, target_sensitivity)
    sensitivity, specificity = sens_spec(y_malignant, p_malignant, threshold)
    contract = {
        "format": CONTRACT_FORMAT,
        "tier": tier,
        "task": "binary" if model.binary else "multiclass",
        "class_names": list(hp.class_names),
        "malignant_classes": malignant_classes,
        "malignant_prior": prior,
        "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "range": [0, 255], "color": "RGB"}
        | {"size": int(hp.image_size)},
        "outputs": ["logits", "probabilities"],
        "preprocess": {
            "steps": [
                "decode, convert to RGB",
                "centre-crop to a square",
                f"resize to {hp.cache_size}x{hp.cache_size} (Lanczos)",
                f"resize to {hp.image_size}x{hp.image_size} (bilinear with antialiasing)",
            ],
            "cache_size": int(hp.cache_size),
        },
        "normalisation": {"mean": list(hp.mean), "std": list(hp.std), "scale": 255, "in_graph": True},
        "temperature": temperature if calibrate else None,
        "operating_threshold": threshold,
        "threshold_selection": {
            "split": "val",
            "target_sensitivity": target_sensitivity,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "tta": False,
        },
        "parity": {"max_abs_diff": diff, "tolerance": tolerance, "images": len(val)},
        "opset": OPSET,
        "onnx_sha256": sha256(out_onnx),
        "checkpoint": str(ckpt),
        "weights_sha256": weights_sha256(model),
        "provenance": provenance or {},
    }
    with atomic_path(out_contract) as tmp:
        tmp.write_text(json.dumps(contract, indent=2) + "\n")
    log.info("%s: exported, threshold %.4f, parity %.1e", out_onnx, threshold, diff)
    return contract
