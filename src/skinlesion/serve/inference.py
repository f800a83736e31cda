"""Inference with an exported model: the ONNX file and its JSON sidecar, without PyTorch.

The sidecar is the inference contract written by the export rule. It says how an uploaded
image becomes the network input (centre square, resize to the cache size with Lanczos, then
bilinear with antialiasing to the input size: the same pixels the evaluate rule feeds the
network), the class names, which classes are malignant, the operating threshold on the
malignant probability and the temperature. The service, the Streamlit app and the inference
benchmark all go through :class:`OnnxClassifier`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from skinlesion.data.preprocess import load_square
from skinlesion.serve.guard import OOD_REASON, quality_reasons

CONTRACT_FORMAT = "skinlesion-onnx/3"  # 2: population probabilities; 3: the input guard (ood_score, contract "guard")
FORMATS = ("JPEG", "PNG")  # what the contract accepts; any other format is refused (415)
MAX_PIXELS = 40_000_000  # the largest image (width x height) decoded; dermatoscopes give well under 20 MP


class ImageError(ValueError):
    """An upload that is not a usable image; the message names the file and the reason."""

    def __init__(self, name: str, reason: str, status: int = 422):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason, self.status = name, reason, status


class Upload(NamedTuple):
    """A decoded upload: its name, the uint8 cache square and the original (width, height) (None where
    the square comes from the cache)."""

    name: str
    square: np.ndarray
    size: tuple[int, int] | None = None


def decode(name: str, data: bytes, *, size: int, max_pixels: int) -> np.ndarray:
    """The uint8 (size, size, 3) cache square of an upload (:func:`read_upload`)."""
    return read_upload(name, data, size=size, max_pixels=max_pixels).square


def read_upload(name: str, data: bytes, *, size: int, max_pixels: int) -> Upload:
    """Decode an upload to the uint8 (size, size, 3) square the cache holds, or raise ImageError.

    Only JPEG and PNG are opened (:data:`FORMATS`). The header is read first, so a decompression bomb
    (a small file declaring a huge image) is refused before any pixel is decoded; the pixels then
    come from :func:`load_square`, the cache's own decode (a JPEG at a reduced DCT scale where it is
    much larger than the cache); a truncated file fails on that decode.
    """
    if not data:
        raise ImageError(name, "empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"decompression bomb refused: {exc}", status=413) from exc
    except (OSError, Image.UnidentifiedImageError, ValueError) as exc:
        raise ImageError(name, f"not a {' or '.join(FORMATS)} image ({type(exc).__name__})", status=415) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(name, f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels", status=413)
    try:
        return Upload(name, load_square(img, size), (w, h))
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"cannot decode image: {exc}") from exc


def to_input(square: np.ndarray, input_size: int) -> np.ndarray:
    """uint8 (S, S, 3) cache square -> float32 (3, n, n) network input in 0-255 (normalised in the graph).

    PIL's bilinear resize with its reducing filter gives the same pixels as the evaluate rule's
    ``torchvision.transforms.v2.Resize(antialias=True)`` on uint8 (tests/test_export.py checks).
    """
    if square.shape[0] != input_size:
        square = np.asarray(Image.fromarray(square).resize((input_size,) * 2, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(square.transpose(2, 0, 1), dtype=np.float32)


def malignant_share(probs: np.ndarray, malignant_idx: list[int]) -> np.ndarray:
    """p_malignant: the malignant columns' sum, clipped to [0, 1] (a float32 sum can pass 1 by an ulp)."""
    return np.clip(probs[:, malignant_idx].sum(axis=1, dtype=np.float64), 0.0, 1.0)


def balanced_decision(probs: np.ndarray, prior) -> np.ndarray:
    """The class that balanced accuracy rewards: the argmax of the population probabilities divided by
    the class prior (the argmax of the uniform-prior probabilities), or of the probabilities without one."""
    return (probs if prior is None else probs / np.asarray(prior)).argmax(axis=1)


@dataclass
class Prediction:
    name: str
    probabilities: dict[str, float]
    p_malignant: float
    malignant: bool
    predicted_class: str
    accepted: bool = True
    reasons: list[str] = field(default_factory=list)
    ood_score: float | None = None

    def as_dict(self) -> dict:
        return {
            "file": self.name,
            "accepted": self.accepted,
            "reasons": self.reasons,
            "predicted_class": self.predicted_class,
            "probabilities": self.probabilities,
            "p_malignant": self.p_malignant,
            "decision": "malignant" if self.malignant else "benign",
            "ood_score": self.ood_score,
        }


PRECISIONS = ("fp32", "int8")


class OnnxClassifier:
    """An exported tier: ONNX Runtime session + contract. ``threads`` sets intra-op threads (0: ORT's default);
    ``precision`` "int8" runs the static int8 model of an export made with ``export.quantize``, at its own
    threshold."""

    def __init__(self, model_dir: str | os.PathLike, threads: int = 0, precision: str = "fp32"):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        sidecar = self.model_dir / "model.json"
        self.contract = c = json.loads(sidecar.read_text())
        if c.get("format") != CONTRACT_FORMAT:
            raise ValueError(f"{sidecar}: not a {CONTRACT_FORMAT} sidecar")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: one of {PRECISIONS}")
        if precision == "int8" and "int8" not in c:
            raise ValueError(f"{sidecar}: no int8 model; export with --config 'export={{quantize: true}}'")
        model = c["int8"] if precision == "int8" else {"file": "model.onnx"} | c
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.model_dir / model["file"]), options, providers=["CPUExecutionProvider"]
        )
        self.precision = precision
        self.class_names: list[str] = c["class_names"]
        self.input_size: int = c["input"]["size"]
        self.cache_size: int = c["preprocess"]["cache_size"]
        self.threshold: float = model["operating_threshold"]
        self.malignant_idx = [self.class_names.index(n) for n in c["malignant_classes"]]
        self.class_prior = c.get("class_prior")
        self.quality_limits: dict = c["guard"]["quality"]
        self.ood_threshold: float = (
            c["int8"]["ood_threshold"] if precision == "int8" else c["guard"]["ood"]["threshold"]
        )
        self.version = f"{c['tier']}-{'int8-' if precision == 'int8' else ''}{model['onnx_sha256'][:12]}"

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, 3, n, n) inputs in 0-255 -> ((N, C) calibrated population class probabilities,
        (N,) out-of-distribution scores of the input guard)."""
        probs, ood = self.session.run(
            ["probabilities", "ood_score"], {"image": np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return probs, ood

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, n, n) inputs in 0-255 -> (N, C) calibrated population class probabilities."""
        return self.outputs(batch)[0]

    def reasons(self, upload: Upload, ood_score: float) -> list[str]:
        """Why the guard refuses an upload (:mod:`skinlesion.serve.guard`): its failed quality checks,
        and out_of_distribution where the score passes the threshold; empty when it is accepted."""
        reasons = quality_reasons(upload.square, upload.size, self.quality_limits)
        return reasons + ([OOD_REASON] if ood_score > self.ood_threshold else [])

    def p_malignant(self, probs: np.ndarray) -> np.ndarray:
        """The malignant classes' share of the probabilities, as the export chose the threshold for."""
        return malignant_share(probs, self.malignant_idx)

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """The predicted class index of each row (:func:`balanced_decision` under the contract's prior)."""
        return balanced_decision(probs, self.class_prior)

    def predict(self, uploads: list[Upload | tuple[str, np.ndarray]]) -> list[Prediction]:
        """Predictions for decoded uploads (:func:`read_upload`; a (name, cache square) pair has no
        size to check), one batch, each with the input guard's verdict."""
        if not uploads:
            return []
        uploads = [Upload(*u) for u in uploads]
        probs, ood = self.outputs(np.stack([to_input(u.square, self.input_size) for u in uploads]))
        p_malignant, decisions = self.p_malignant(probs), self.decisions(probs)
        out = []
        for u, p, p_mal, k, score in zip(uploads, probs, p_malignant.tolist(), decisions, ood.tolist(), strict=True):
            reasons = self.reasons(u, score)
            out.append(
                Prediction(
                    name=u.name,
                    probabilities={c: min(1.0, float(v)) for c, v in zip(self.class_names, p, strict=True)},
                    p_malignant=p_mal,
                    malignant=p_mal >= self.threshold,
                    predicted_class=self.class_names[int(k)],
                    accepted=not reasons,
                    reasons=reasons,
                    ood_score=score,
                )
            )
        return out
