"""Patient metadata (age, sex, body site) as a second opinion beside the image model.

A multinomial logistic regression on one-hot age bands, sex and localization is fitted on the
training split only, and stored as a plain lookup table (JSON): the per-class log-odds each
value adds. Inference needs no scikit-learn: sum the rows of the given values, log-softmax.

Fusion is naive Bayes: assuming the image and the metadata are independent given the diagnosis,
``p(y | image, meta) ∝ p(y | image) · p(meta | y) ∝ p(y | image) · p(y | meta) / p_train(y)``.
So the metadata *adds* ``log p(y | meta) − log p_train(y)`` to the image model's log-probabilities,
whatever class prior the image model itself was trained under (sampler, weights or none). Only
what a clinic knows before the diagnosis is used; ``dx_type`` (how the diagnosis was confirmed)
would leak the label and is never a feature.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd

from skinlesion import CLASSES
from skinlesion.io import atomic_path

log = logging.getLogger(__name__)

FEATURES = ("age", "sex", "localization")
AGE_BAND = 10  # years per age band; 80 and older share one


def encode(table: pd.DataFrame) -> pd.DataFrame:
    """The categorical value of each feature per row: an age band, sex, localization, or 'unknown'."""
    missing = [f for f in FEATURES if f not in table.columns]
    if missing:
        raise KeyError(f"metadata: column(s) {missing} missing; expected {list(FEATURES)}")
    age = pd.to_numeric(table["age"], errors="coerce")
    band = (age.clip(upper=80) // AGE_BAND * AGE_BAND).astype("Int64")
    out = pd.DataFrame(index=table.index)
    out["age"] = band.map(lambda b: f"{b}+" if b == 80 else f"{b}-{b + AGE_BAND - 1}", na_action="ignore")
    for name in ("sex", "localization"):
        out[name] = table[name].astype("string").str.strip().str.lower()
    return out.fillna("unknown").replace({"": "unknown"})


def fit_metadata_model(
    index_csv: str | os.PathLike, split_csv: str | os.PathLike, out_json: str | os.PathLike, *, C: float = 1.0
) -> dict:
    """The metadata_model rule: fit on the training split, write the lookup table."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    from skinlesion.tables import load_development_table

    train = load_development_table(index_csv, split_csv).query("split == 'train'")
    y = train["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    x = encode(train)
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(x)
    clf = LogisticRegression(C=C, max_iter=5000).fit(onehot.transform(x), y)
    if list(clf.classes_) != list(range(len(CLASSES))):
        raise ValueError(f"metadata: the training split lacks class(es); it holds {sorted(set(train['dx']))}")
    coef, column = {}, 0
    for name, values in zip(FEATURES, onehot.categories_, strict=True):
        coef[name] = {str(v): clf.coef_[:, column + i].round(6).tolist() for i, v in enumerate(values)}
        column += len(values)
    counts = np.bincount(y, minlength=len(CLASSES))
    model = {
        "classes": list(CLASSES),
        "features": list(FEATURES),
        "age_band_years": AGE_BAND,
        "intercept": clf.intercept_.round(6).tolist(),
        "coef": coef,
        "log_prior": np.log(counts / counts.sum()).round(6).tolist(),
        "n_train": int(len(train)),
        "C": C,
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(model, indent=1) + "\n")
    log.info("metadata model: fitted on %d training images", len(train))
    return model


def load_metadata_model(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def log_likelihood_ratio(model: dict, table: pd.DataFrame) -> np.ndarray:
    """(N, 7): ``log p(y | meta) − log p_train(y)`` per row; values the model never saw add nothing."""
    x = encode(table)
    logits = np.tile(np.asarray(model["intercept"], dtype=float), (len(x), 1))
    for name in model["features"]:
        table_rows = model["coef"][name]
        zero = [0.0] * len(model["classes"])
        logits += np.array([table_rows.get(v, zero) for v in x[name]], dtype=float).reshape(len(x), -1)
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return log_p - np.asarray(model["log_prior"], dtype=float)


def fuse(probs: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """Image-model class probabilities times the metadata likelihood ratio, renormalised."""
    scores = np.log(np.clip(probs, 1e-12, None)) + log_ratio
    scores -= scores.max(axis=1, keepdims=True)
    fused = np.exp(scores)
    return fused / fused.sum(axis=1, keepdims=True)
