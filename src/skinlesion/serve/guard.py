"""The input guard: when the exported model should not answer.

The model knows dermatoscopic images of HAM10000's kind and nothing else. Every upload passes two
checks before its prediction counts; each failure is a named reason, and the service and the app
still return the prediction, marked ``accepted: false``:

1. **Image quality**, on the decoded image with thresholds a user can read (``export.guard.quality``):
   ``too_small`` (shorter side of the upload under ``min_side`` pixels), ``nearly_uniform`` (grey-level
   standard deviation under ``min_contrast``), ``too_dark`` / ``overexposed`` (mean grey level under
   ``min_brightness`` / over ``max_brightness``, of 255), ``blurred`` (variance of the grey image's
   Laplacian under ``min_sharpness``) and ``noisy`` (that variance over the grey-level variance above
   ``max_noise``: pixel noise scores far above a photograph), all on the cache square.
   The export records the share of training images each check flags.
2. **Out of distribution** (``out_of_distribution``), a score from the model itself, computed in the
   ONNX graph as its output ``ood_score`` (higher: further from the training data):

   - ``mahalanobis``: the smallest Mahalanobis distance (squared) of the penultimate features (the
     classifier's input) to a class mean, with class means and a shared Ledoit-Wolf covariance fitted
     on the training split (Lee et al., 2018);
   - ``energy``: minus T log-sum-exp(logits / T) (Liu et al., 2020);
   - ``msp``: minus the largest class probability under a uniform prior (Hendrycks & Gimpel, 2017).

   Its threshold is the ``accept_share`` quantile of the validation split's scores, so that share of
   in-distribution images is accepted. Which score is deployed is declared in the configuration
   (``export.guard.score``), not chosen on a test number; ``benchmarks/guard.py`` compares all three.
"""

from __future__ import annotations

import numpy as np

SCORES = ("mahalanobis", "energy", "msp")
QUALITY_REASONS = ("too_small", "nearly_uniform", "too_dark", "overexposed", "blurred", "noisy")
OOD_REASON = "out_of_distribution"
REASONS = (*QUALITY_REASONS, OOD_REASON)
REASON_TEXT = {  # how the app words each reason
    "too_small": "the image is too small",
    "nearly_uniform": "the image is nearly uniform",
    "too_dark": "the image is very dark",
    "overexposed": "the image is overexposed",
    "blurred": "the image is very blurred",
    "noisy": "the image is mostly noise",
    "out_of_distribution": "the model finds it unlike its training images",
}
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma


def quality_measures(square: np.ndarray) -> dict[str, float]:
    """Grey-level mean, standard deviation and Laplacian variance of a uint8 (S, S, 3) square."""
    grey = square.astype(np.float32) @ GREY
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    return {"brightness": float(grey.mean()), "contrast": float(grey.std()), "sharpness": float(lap.var())}


def quality_reasons(square: np.ndarray, size: tuple[int, int] | None, limits: dict) -> list[str]:
    """The quality checks an image fails (:data:`QUALITY_REASONS`, in that order); ``size`` is the
    upload's (width, height), None where unknown (a cache square: the size check is skipped)."""
    m = quality_measures(square)
    failed = {
        "too_small": size is not None and min(size) < limits["min_side"],
        "nearly_uniform": m["contrast"] < limits["min_contrast"],
        "too_dark": m["brightness"] < limits["min_brightness"],
        "overexposed": m["brightness"] > limits["max_brightness"],
        "blurred": m["sharpness"] < limits["min_sharpness"],
        "noisy": m["sharpness"] > limits["max_noise"] * m["contrast"] ** 2,
    }
    return [reason for reason in QUALITY_REASONS if failed[reason]]


def fit_gaussian(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, d) and the shared precision (d, d) of the class-centred features, with
    Ledoit-Wolf shrinkage (the features of a CNN are many and correlated)."""
    from sklearn.covariance import LedoitWolf

    features = features.astype(np.float64)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    covariance = LedoitWolf(assume_centered=True).fit(features - means[labels]).covariance_
    return means, np.linalg.inv(covariance)


def threshold_for_share(val_scores: np.ndarray, accept_share: float) -> float:
    """The score under which ``accept_share`` of the validation images fall (accepted: score <= it)."""
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), accept_share, method="higher"))


OUTPUTS = ("logits", "probabilities", "ood_score")  # the exported graph's outputs, in order
SCORE_DESCRIPTIONS = {
    "mahalanobis": "smallest squared Mahalanobis distance of the penultimate features to a class mean "
    "(class means and a shared Ledoit-Wolf covariance of the training split)",
    "energy": "minus temperature * logsumexp(logits / temperature)",
    "msp": "minus the largest class probability under a uniform prior (softmax(logits / temperature))",
}


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _text_image(size: tuple[int, int] = (600, 450)) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    words = "Dermatoscopy report: lesion on the upper back, asymmetric, two colours, follow-up in six months."
    for i in range(0, size[1] - 20, 18):
        draw.text((10, i + 4), words[(i // 18) % 20 :], fill="black")
    return np.asarray(img)


def reference_ood_images(seed: int = 0) -> list[tuple[str, bytes]]:
    """Images that are not dermatoscopic, all offline: the photographs that ship with matplotlib
    (``mpl-data/sample_data``) and scikit-learn (``datasets/images``), and generated ones (uniform
    and Gaussian noise, flat colours, black text on white, a colour gradient). (name, file bytes)."""
    from pathlib import Path

    import matplotlib
    import sklearn

    shipped = [
        Path(matplotlib.get_data_path()) / "sample_data" / name
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
    ]
    shipped += [Path(sklearn.__file__).parent / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]
    images = [(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in shipped]
    rng = np.random.default_rng(seed)
    h, w = 450, 600
    generated = {
        "uniform_noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "gaussian_noise": np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8),
        "flat_grey": np.full((h, w, 3), 128, np.uint8),
        "flat_skin": np.broadcast_to(np.array([224, 172, 150], np.uint8), (h, w, 3)).copy(),
        "flat_black": np.zeros((h, w, 3), np.uint8),
        "text": _text_image((w, h)),
        "gradient": np.stack(
            np.broadcast_arrays(np.arange(w)[None, :] * 255 // w, np.arange(h)[:, None] * 255 // h, 128), axis=-1
        ).astype(np.uint8),
    }
    return images + [(f"generated/{name}.png", _png(a)) for name, a in generated.items()]
