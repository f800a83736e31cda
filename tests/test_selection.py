"""Model selection by lesion-grouped K-fold cross-validation on the development data."""

import pandas as pd
import pytest

from conftest import run_snakemake, sample_run_args
from skinlesion.config import ConfigError, load_config
from skinlesion.train.selection import METRICS, adopt, deep_merge, false_adoption_rate, variant_settings

VARIANTS = ("default", "logit_adjust", "no_mixup")  # selection.variants.baseline_cnn


@pytest.fixture(scope="module")
def selection(sample_run):
    """The selection target of the baseline CNN on the bundled sample (its default and its variants, 3 folds)."""
    run_snakemake(sample_run, *sample_run_args(sample_run, "--", "results/selection/baseline_cnn.csv"))
    return sample_run / "results" / "selection"


def test_folds_hold_whole_lesions_of_the_development_data_only(selection, sample_run):
    folds = pd.read_csv(selection / "folds.csv")
    split = pd.read_csv(sample_run / "results" / "data" / "split.csv")
    development = split[split["split"] != "test"]
    assert sorted(folds["image_id"]) == sorted(development["image_id"])
    assert folds.groupby("lesion_id")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    for variant in VARIANTS:
        held_out = [
            pd.read_csv(selection / "baseline_cnn" / variant / f"fold{k}" / "predictions.csv") for k in range(3)
        ]
        for k, preds in enumerate(held_out):
            assert set(preds["image_id"]) == set(folds.loc[folds["fold"] == k, "image_id"]), (variant, k)


def test_selection_table_has_per_fold_and_mean_sd_rows_and_no_test_number(selection, sample_run):
    table = pd.read_csv(selection / "baseline_cnn.csv", dtype={"fold": str})
    assert list(table["variant"].unique()) == list(VARIANTS)
    assert set(table["fold"]) == {"0", "1", "2", "mean", "sd"}
    per_fold = table[table["fold"].isin(["0", "1", "2"])]
    assert len(per_fold) == 3 * len(VARIANTS) and per_fold["balanced_accuracy"].between(0, 1).all()
    assert (table.loc[table["variant"] == "default", ["delta_balanced_accuracy", "delta_malignant_auroc"]] == 0).all(
        axis=None
    )
    other = per_fold[per_fold["variant"] == "no_mixup"].set_index("fold")
    default = per_fold[per_fold["variant"] == "default"].set_index("fold")
    delta = (other["malignant_auroc"] - default["malignant_auroc"]).round(4)
    pd.testing.assert_series_equal(delta, other["delta_malignant_auroc"].round(4), check_names=False)
    means = table[table["fold"] == "mean"].set_index("variant")
    assert means.loc["no_mixup", "balanced_accuracy"] == pytest.approx(other["balanced_accuracy"].mean(), abs=1e-4)
    # The table says which variant replaces the default, by the selection rule, and how often that rule errs.
    sd = table[table["fold"] == "sd"].set_index("variant")
    deltas = [(means.loc["no_mixup", f"delta_{m}"], sd.loc["no_mixup", f"delta_{m}"]) for m in METRICS]
    assert not means.loc["default", "adopted"]
    assert bool(means.loc["no_mixup", "adopted"]) == adopt(*deltas, k=3)
    assert (means["false_adoption_rate"] == round(false_adoption_rate(3), 4)).all()
    assert per_fold["adopted"].isna().all()
    # Every image scored in selection is a development image: the held-out folds add up to train + val.
    split = pd.read_csv(sample_run / "results" / "data" / "split.csv")
    assert means.loc["default", "n_images"] == (split["split"] != "test").sum()


def test_variants_lay_their_keys_over_the_tier_settings():
    config = load_config()
    variants = {"resnet": {"wide": {"lr": 0.001, "model": {"widths": [64, 128, 256, 512]}}}}
    settings = variant_settings(config["train"], "resnet", "wide", variants)
    assert settings["lr"] == 0.001 and settings["model"]["widths"] == [64, 128, 256, 512]
    assert settings["model"]["blocks_per_stage"] == config["train"]["resnet"]["model"]["blocks_per_stage"]
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
    with pytest.raises(ConfigError, match=r"selection.variants.resnet.both: imbalance: both is refused"):
        variant_settings(config["train"], "resnet", "both", {"resnet": {"both": {"imbalance": "both"}}})
    with pytest.raises(ConfigError, match=r"selection.variants.resnet: no variant 'wide'; configured: \['slim'\]"):
        variant_settings(config["train"], "resnet", "wide", {"resnet": {"slim": {"lr": 0.01}}})
