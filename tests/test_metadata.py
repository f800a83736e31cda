"""The metadata model: its lookup table is the fitted model, fusion is naive Bayes, bad input is named."""

import json

import numpy as np
import pandas as pd
import pytest

from skinlesion import CLASSES
from skinlesion.train.metadata import encode, fit_metadata_model, fuse, log_likelihood_ratio

SITES = ["back", "face", "lower extremity", "trunk"]


def write_cache_tables(folder, n: int = 700, seed: int = 0):
    """index.csv and split.csv in the cache's format, where age and site carry class information."""
    rng = np.random.default_rng(seed)
    dx = np.asarray(CLASSES)[np.arange(n) % len(CLASSES)]
    age = np.where(np.isin(dx, ["akiec", "bcc"]), rng.normal(70, 8, n), rng.normal(40, 12, n)).round()
    age[::50] = np.nan
    site = np.where(dx == "bcc", "face", np.asarray(SITES)[rng.integers(0, len(SITES), n)])
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    index = pd.DataFrame(
        {
            "row": range(n),
            "lesion_id": [f"HAM_{i:07d}" for i in range(n)],
            "image_id": ids,
            "dx": dx,
            "dx_type": "histo",
            "age": age,
            "sex": np.where(rng.random(n) < 0.5, "male", "female"),
            "localization": site,
            "malignant": np.isin(dx, ["mel", "bcc", "akiec"]).astype(int),
            "source": "part_1.zip",
        }
    )
    split = index[["image_id", "lesion_id", "dx", "malignant"]].assign(split=np.where(np.arange(n) % 5, "train", "val"))
    index.to_csv(folder / "index.csv", index=False)
    split.to_csv(folder / "split.csv", index=False)
    return index, split


def test_the_lookup_table_is_the_fitted_logistic_regression(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    index, split = write_cache_tables(tmp_path)
    model = fit_metadata_model(tmp_path / "index.csv", tmp_path / "split.csv", tmp_path / "meta.json")
    assert json.loads((tmp_path / "meta.json").read_text()) == model
    assert model["n_train"] == int((split["split"] == "train").sum())

    train = index[split["split"].to_numpy() == "train"]
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(encode(train))
    clf = LogisticRegression(max_iter=5000).fit(onehot.transform(encode(train)), train["dx"].map(CLASSES.index))
    expected = np.log(clf.predict_proba(onehot.transform(encode(index)))) - np.asarray(model["log_prior"])
    np.testing.assert_allclose(log_likelihood_ratio(model, index), expected, atol=1e-4)

    # What the data says: an old patient's lesion on the face is more likely bcc, a young one's less.
    old_face, young_back = log_likelihood_ratio(
        model, pd.DataFrame({"age": [75, 25], "sex": ["male", "male"], "localization": ["face", "back"]})
    )
    bcc = CLASSES.index("bcc")
    assert old_face[bcc] > 1 > -1 > young_back[bcc]


def test_unseen_and_missing_values_add_nothing(tmp_path):
    write_cache_tables(tmp_path)
    model = fit_metadata_model(tmp_path / "index.csv", tmp_path / "split.csv", tmp_path / "meta.json")
    known = pd.DataFrame({"age": [45], "sex": ["female"], "localization": ["back"]})
    unseen = known.assign(localization=["acral"], sex=[None])
    by_hand = np.asarray(model["intercept"]) + np.asarray(model["coef"]["age"]["40-49"])
    by_hand = by_hand - np.logaddexp.reduce(by_hand) - np.asarray(model["log_prior"])
    np.testing.assert_allclose(log_likelihood_ratio(model, unseen)[0], by_hand, atol=1e-9)
    assert not np.allclose(log_likelihood_ratio(model, known), log_likelihood_ratio(model, unseen))


def test_fusion_multiplies_in_the_likelihood_ratio():
    probs = np.array([[0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05]])
    ratio = np.log(np.array([[2.0, 1, 1, 1, 1, 1, 0.5]]))
    fused = fuse(probs, ratio)
    expected = probs * np.exp(ratio)
    np.testing.assert_allclose(fused, expected / expected.sum(), rtol=1e-9)
    np.testing.assert_allclose(fuse(probs, np.zeros_like(ratio)), probs, rtol=1e-9)


def test_a_missing_metadata_column_is_named(tmp_path):
    with pytest.raises(KeyError, match="localization"):
        encode(pd.DataFrame({"age": [40], "sex": ["male"]}))


def test_a_training_split_without_a_class_is_refused(tmp_path):
    index, split = write_cache_tables(tmp_path)
    keep = (index["dx"] != "df") | (split["split"] != "train")
    index[keep].to_csv(tmp_path / "index.csv", index=False)
    split[keep].to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(ValueError, match="lacks class"):
        fit_metadata_model(tmp_path / "index.csv", tmp_path / "split.csv", tmp_path / "meta.json")
    assert not (tmp_path / "meta.json").exists()
