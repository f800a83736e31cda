"""The export rule: a tier's best checkpoint to one ONNX file plus its JSON inference contract.

The exported graph takes float32 (N, 3, n, n) RGB pixels in 0-255 (any N) and returns the
logits, the population class probabilities softmax(logits / T + log prior) and the input guard's
out-of-distribution score (:mod:`skinlesion.serve.guard`, fitted on the training split, its
threshold on the validation split): for a model
trained under a uniform class prior (class-balanced sampler, class weights, logit-adjusted loss),
``prior`` is the training split's class frequencies, so the probabilities are those of the
population the data came from, and p_malignant is the sum of the malignant columns. The
balanced-accuracy decision is the argmax of probabilities / prior. Normalisation is inside the graph. On
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

With ``quantize`` it also writes a static int8 copy (ONNX Runtime's QDQ quantization, per-channel
int8 weights, uint8 activations whose ranges come from training-split images; the temperature, the
softmax and the in-graph normalisation stay in float), chooses that model's own threshold on the
validation split, and states in the contract what int8 changes there: balanced accuracy,
malignant AUROC, argmax agreement and the largest probability difference against the fp32 model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skinlesion import MALIGNANT
from skinlesion.config import load_config
from skinlesion.evaluate.metrics import decision_scores, sens_spec, threshold_for_sensitivity
from skinlesion.io import atomic_path, sha256sum
from skinlesion.serve.guard import (
    OUTPUTS,
    QUALITY_REASONS,
    SCORE_DESCRIPTIONS,
    SCORES,
    fit_gaussian,
    quality_reasons,
    threshold_for_share,
)
from skinlesion.serve.inference import CONTRACT_FORMAT, balanced_decision, malignant_share, to_input
from skinlesion.tables import load_development_table
from skinlesion.train.module import LesionClassifier, load_classifier

log = logging.getLogger(__name__)
OPSET = 18


def split_classifier(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(body, head): a copy of ``net`` whose last ``nn.Linear`` is an identity, so the body returns the
    penultimate features, and that linear layer. For the tiers' networks ``head(body(x)) == net(x)``;
    :class:`Deployed` checks it on real inputs."""
    name, head = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    body = copy.deepcopy(net)
    parent, _, attr = name.rpartition(".")
    setattr(body.get_submodule(parent) if parent else body, attr, nn.Identity())
    return body, copy.deepcopy(head)


def mahalanobis(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """The smallest squared Mahalanobis distance of each row to a class mean."""
    diff = features[:, None, :] - means[None]
    return ((diff @ precision) * diff).sum(-1).amin(dim=1)


def logit_scores(logits: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The two logit-based scores (higher: more out of distribution)."""
    scaled = logits / temperature
    return {
        "energy": -temperature * torch.logsumexp(scaled, dim=1),
        "msp": -torch.softmax(scaled, dim=1).amax(dim=1),
    }


class Deployed(nn.Module):
    """The exported network: 0-255 image -> (logits, population probabilities, ood_score).

    ``model`` is a :class:`skinlesion.train.module.LesionClassifier`; the probabilities are
    softmax(logits / T + log prior); ``ood_score`` is the guard's configured score (:data:`SCORES`),
    the Mahalanobis one from the statistics :meth:`set_gaussian` sets (:func:`fit_gaussian`)."""

    def __init__(self, model, temperature: float = 1.0, prior=None, *, score: str = "mahalanobis"):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"export.guard.score {score!r}: one of {SCORES}")
        self.body, self.head = split_classifier(model.net)
        self.register_buffer("mean", model.mean.detach().clone().float())
        self.register_buffer("std", model.std.detach().clone().float())
        self.temperature, self.score = float(temperature), score
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature))
        classes, dim = len(model.hparams.class_names), self.head.in_features
        log_prior = torch.zeros(classes) if prior is None else torch.tensor(prior).log()
        self.register_buffer("log_prior", log_prior.float())
        self.register_buffer("means", torch.zeros(classes, dim))
        self.register_buffer("precision", torch.eye(dim))

    def set_gaussian(self, means: np.ndarray, precision: np.ndarray) -> None:
        self.means.copy_(torch.as_tensor(means, dtype=torch.float32))
        self.precision.copy_(torch.as_tensor(precision, dtype=torch.float32))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The penultimate features (the classifier's input) of 0-255 images."""
        return self.body((image.float() - self.mean) / self.std).float()

    def scores(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, every score of :data:`SCORES`) of 0-255 images."""
        features = self.features(image)
        logits = self.head(features).float()
        return logits, {"mahalanobis": mahalanobis(features, self.means, self.precision)} | logit_scores(
            logits, self.temperature
        )

    def forward(self, image: torch.Tensor):
        features = self.features(image)
        logits = self.head(features).float()
        probs = torch.softmax(logits * self.inv_temperature + self.log_prior, dim=1)
        if self.score == "mahalanobis":
            ood = mahalanobis(features, self.means, self.precision)
        else:
            ood = logit_scores(logits, self.temperature)[self.score]
        return logits, probs, ood


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


# The operators quantized to int8; the softmax (and everything after the logits) stays in float,
# so probabilities near the threshold keep their resolution.
INT8_OPS = ["Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "MaxPool", "GlobalAveragePool", "AveragePool"]


def quantize_int8(fp32_onnx: str | os.PathLike, out_onnx: str | os.PathLike, calibration: np.ndarray) -> None:
    """Static int8 quantization of an exported graph (QDQ format, per-channel weights), its activation
    ranges calibrated (min-max) on ``calibration``, float32 (N, 3, n, n) inputs in 0-255."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": np.ascontiguousarray(batch)}

    with tempfile.TemporaryDirectory() as tmp, atomic_path(out_onnx) as out:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=INT8_OPS,
        )


# Node metadata the exporter writes that names the exporting checkout's files (each node's Python
# stack trace, with absolute paths); the same model exported from another folder or inside the
# container image would otherwise give other bytes.
LOCATION_METADATA = ("pkg.torch.onnx.stack_trace",)


def _save_without_locations(program, path: str | os.PathLike) -> None:
    """Save an ``torch.onnx.export`` program without the node metadata that holds file paths."""
    for node in (*program.model.graph, *(n for f in program.model.functions.values() for n in f)):
        for key in LOCATION_METADATA:
            node.metadata_props.pop(key, None)
    program.save(str(path))


def _inputs(images_npy: str, rows: np.ndarray, input_size: int) -> np.ndarray:
    cache = np.load(images_npy, mmap_mode="r")
    return np.stack([to_input(np.asarray(cache[r]), input_size) for r in rows])


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a network's weights (names, dtypes, shapes, values). Unlike the checkpoint file's
    hash it is the same for a rerun: Lightning checkpoints also record run-specific paths."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _outputs(fn, images_npy: str, rows: np.ndarray, input_size: int, batch: int = 256) -> list[np.ndarray]:
    """``fn``'s outputs (a tuple of tensors or arrays) over the cached images ``rows``, in batches, concatenated."""
    parts = [
        fn(torch.from_numpy(_inputs(images_npy, rows[i : i + batch], input_size))) for i in range(0, len(rows), batch)
    ]
    return [np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(parts[0]))]


def _onnx_outputs(onnx_file: str | os.PathLike, images_npy: str, rows: np.ndarray, input_size: int) -> list[np.ndarray]:
    """(probabilities, ood_score) an ONNX file gives for the cached images ``rows``, from ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return _outputs(
        lambda x: session.run(["probabilities", "ood_score"], {"image": x.numpy()}), images_npy, rows, input_size
    )


def quality_flagged(images_npy: str, rows: np.ndarray, limits: dict) -> dict[str, float]:
    """The share of the cached images ``rows`` each quality check flags (the size check needs the upload)."""
    cache = np.load(images_npy, mmap_mode="r")
    flagged = [quality_reasons(np.asarray(cache[r]), None, limits) for r in rows]
    return {
        reason: float(np.mean([reason in f for f in flagged])) for reason in QUALITY_REASONS if reason != "too_small"
    }


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
    out_int8: str | os.PathLike | None = None,
    calibration_images: int = 256,
    guard: dict | None = None,
) -> dict:
    """Export one tier; returns the contract written to ``out_contract``. ``device`` runs the PyTorch
    side (temperature fit, the reference of the parity check) there, in fp32 without TF32; the ONNX
    graph is always traced on the CPU, and ONNX Runtime runs on the CPU, as the service does.
    ``out_int8``: also write the static int8 model there (:func:`quantize_int8`), calibrated on the
    first ``calibration_images`` training-split images, described under the contract's ``int8``.
    ``guard``: the input guard's settings (``export.guard``; :mod:`skinlesion.serve.guard`), the
    configuration's defaults where None; its Mahalanobis statistics come from the training split,
    its threshold from the validation split."""
    guard = guard or load_config()["export"]["guard"]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = load_classifier(ckpt, device).float()
    hp = model.hparams
    table = load_development_table(index_csv, split_csv)
    val, train = table[table["split"] == "val"], table[table["split"] == "train"]
    x_val = torch.from_numpy(_inputs(images_npy, val["row"].to_numpy(), hp.image_size))
    with torch.no_grad():
        logits = torch.cat([model(b.to(model.device)).float().cpu() for b in x_val.split(256)])
    class_index = {c: i for i, c in enumerate(hp.class_names)}
    if model.binary:
        labels, malignant_classes = torch.tensor(val["malignant"].to_numpy()), ["malignant"]
        train_labels = train["malignant"].to_numpy().astype(int)
    else:
        labels = torch.tensor(val["dx"].map(class_index).to_numpy())
        malignant_classes = list(MALIGNANT)
        train_labels = train["dx"].map(class_index).to_numpy()
    malignant_idx = [list(hp.class_names).index(c) for c in malignant_classes]
    prior = hp.get("malignant_prior")
    temperature = fit_temperature(logits, labels, prior) if calibrate else 1.0
    log.info("%s: temperature %.3f on %d validation images", tier, temperature, len(val))

    deployed = Deployed(model, temperature, prior, score=guard["score"]).eval()

    train_rows, val_rows = train["row"].to_numpy(), val["row"].to_numpy()
    with torch.no_grad():
        features = _outputs(
            lambda x: (deployed.features(x.to(model.device)).cpu(),), images_npy, train_rows, hp.image_size
        )
        deployed.set_gaussian(*fit_gaussian(features[0], train_labels, len(hp.class_names)))
        torch_logits, torch_probs, torch_ood = _outputs(
            lambda x: [t.cpu() for t in deployed(x.to(model.device))], images_npy, val_rows, hp.image_size
        )
    split_diff = float(np.abs(torch_logits - logits.numpy()).max())
    if not split_diff < tolerance:
        raise RuntimeError(f"{ckpt}: the network split at its classifier differs from it by {split_diff:.2e}")
    deployed = deployed.cpu()
    with atomic_path(out_onnx) as tmp:
        program = torch.onnx.export(
            deployed,
            (x_val[:2],),
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
        _save_without_locations(program, tmp)
        ort_probs, ort_ood = _onnx_outputs(tmp, images_npy, val_rows, hp.image_size)
        diff = float(np.abs(ort_probs - torch_probs).max())
        ood_diff = float((np.abs(ort_ood - torch_ood) / np.maximum(1.0, np.abs(torch_ood))).max())
        if not (diff < tolerance and ood_diff < tolerance * 10):
            raise RuntimeError(
                f"{out_onnx}: ONNX Runtime and PyTorch differ by {diff:.2e} in probabilities and "
                f"{ood_diff:.2e} (relative) in ood_score (tolerance {tolerance:.0e})"
            )

    y_malignant = val["malignant"].to_numpy().astype(bool)

    def operating_point(probs: np.ndarray) -> tuple[np.ndarray, float, dict]:
        p_malignant = malignant_share(probs, malignant_idx)
        threshold = threshold_for_sensitivity(y_malignant, p_malignant, target_sensitivity)
        sensitivity, specificity = sens_spec(y_malignant, p_malignant, threshold)
        selection = {"split": "val", "target_sensitivity": target_sensitivity, "tta": False}
        return p_malignant, threshold, selection | {"sensitivity": sensitivity, "specificity": specificity}

    p_malignant, threshold, threshold_selection = operating_point(ort_probs)
    guard_block = {
        "quality": dict(guard["quality"]),
        "quality_flagged": {"split": "train", **quality_flagged(images_npy, train["row"].to_numpy(), guard["quality"])},
        "ood": {
            "score": guard["score"],
            "description": SCORE_DESCRIPTIONS[guard["score"]],
            "fitted_on": {"split": "train", "images": len(train)},
            "accept_share": guard["accept_share"],
            "threshold": threshold_for_share(ort_ood, guard["accept_share"]),
            "threshold_split": "val",
        },
    }
    contract = build_contract(
        model,
        tier=tier,
        malignant_classes=malignant_classes,
        temperature=temperature if calibrate else None,
        threshold=threshold,
        threshold_selection=threshold_selection,
        parity={"max_abs_diff": diff, "ood_score_max_rel_diff": ood_diff, "tolerance": tolerance, "images": len(val)},
        onnx_file=out_onnx,
        ckpt=ckpt,
        guard=guard_block,
        provenance=provenance,
    )
    if out_int8:
        calibration = table[table["split"] == "train"].head(calibration_images)
        quantize_int8(out_onnx, out_int8, _inputs(images_npy, calibration["row"].to_numpy(), hp.image_size))
        int8_probs, int8_ood = _onnx_outputs(out_int8, images_npy, val_rows, hp.image_size)
        int8_p_malignant, int8_threshold, int8_selection = operating_point(int8_probs)
        y_class = labels.numpy()
        contract["int8"] = {
            "file": Path(out_int8).name,
            "onnx_sha256": sha256sum(out_int8),
            "operating_threshold": int8_threshold,
            "threshold_selection": int8_selection,
            "ood_threshold": threshold_for_share(int8_ood, guard["accept_share"]),
            "calibration": {"split": "train", "images": len(calibration), "method": "min-max", "format": "QDQ"},
            "validation": {
                "fp32": decision_scores(y_class, balanced_decision(ort_probs, prior), y_malignant, p_malignant),
                "int8": decision_scores(y_class, balanced_decision(int8_probs, prior), y_malignant, int8_p_malignant),
                "argmax_agreement": float((int8_probs.argmax(1) == ort_probs.argmax(1)).mean()),
                "max_abs_diff": float(np.abs(int8_probs - ort_probs).max()),
                "images": len(val),
            },
        }
        log.info("%s: int8 %s", out_int8, contract["int8"]["validation"])
    with atomic_path(out_contract) as tmp:
        tmp.write_text(json.dumps(contract, indent=2) + "\n")
    log.info("%s: exported, threshold %.4f, parity %.1e, guard %s", out_onnx, threshold, diff, guard_block["ood"])
    return contract


def build_contract(
    model: LesionClassifier,
    *,
    tier: str,
    malignant_classes: list[str],
    temperature: float | None,
    threshold: float,
    threshold_selection: dict,
    parity: dict,
    onnx_file: str | os.PathLike,
    ckpt: str,
    guard: dict,
    provenance: dict | None,
) -> dict:
    """The inference contract (``model.json``) of an exported model: what the service, the app and
    :class:`skinlesion.serve.inference.OnnxClassifier` need to turn an upload into an answer."""
    hp = model.hparams
    prior = hp.get("malignant_prior")
    return {
        "format": CONTRACT_FORMAT,
        "tier": tier,
        "task": "binary" if model.binary else "multiclass",
        "class_names": list(hp.class_names),
        "malignant_classes": malignant_classes,
        "class_prior": prior,
        "probabilities": (
            "population: softmax(logits / temperature + log class_prior), class_prior the training split's class "
            "frequencies; p_malignant is the sum of the malignant classes' columns; predicted_class the argmax "
            "of probabilities / class_prior (the balanced-accuracy decision)"
            if prior
            else "softmax(logits / temperature); p_malignant is the sum of the malignant classes' columns"
        ),
        "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "range": [0, 255], "color": "RGB"}
        | {"size": int(hp.image_size)},
        "outputs": list(OUTPUTS),
        "preprocess": {
            "steps": [
                "decode (JPEG or PNG; a large JPEG at a reduced DCT scale, as the cache), convert to RGB",
                "centre-crop to a square",
                f"resize to {hp.cache_size}x{hp.cache_size} (Lanczos)",
                f"resize to {hp.image_size}x{hp.image_size} (bilinear with antialiasing)",
            ],
            "cache_size": int(hp.cache_size),
        },
        "normalisation": {"mean": list(hp.mean), "std": list(hp.std), "scale": 255, "in_graph": True},
        "temperature": temperature,
        "operating_threshold": threshold,
        "threshold_selection": threshold_selection,
        "guard": guard,
        "parity": parity,
        "opset": OPSET,
        "onnx_sha256": sha256sum(onnx_file),
        "checkpoint": str(ckpt),
        "weights_sha256": weights_sha256(model),
        "provenance": provenance or {},
    }
