"""Metric code against values computed by hand."""

import numpy as np
import pytest

from skinlesion import CLASSES, malignant_probability
from skinlesion import population_probabilities as population
from skinlesion.evaluate.metrics import (
    _point_metrics,
    expected_calibration_error,
    lesion_bootstrap,
    sens_spec,
    threshold_for_sensitivity,
)

AKIEC, BCC, BKL, DF, MEL, NV, VASC = range(7)


def onehotish(pred, conf=0.9):
    """Probabilities putting ``conf`` on the predicted class and the rest evenly elsewhere."""
    probs = np.full((len(pred), 7), (1 - conf) / 6)
    probs[np.arange(len(pred)), pred] = conf
    return probs


def test_balanced_accuracy_is_mean_per_class_recall():
    # nv: 4 of 4 right; mel: 1 of 2 right; bcc: 0 of 1 right; others absent.
    y = np.array([NV, NV, NV, NV, MEL, MEL, BCC])
    pred = np.array([NV, NV, NV, NV, MEL, NV, MEL])
    m = _point_metrics(y, onehotish(pred), malignant_probability(onehotish(pred)), threshold=None)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_threshold_reaches_target_sensitivity_at_the_highest_cut():
    # 20 malignant scores 0.05, 0.10, ..., 1.00; 95% sensitivity keeps 19 of 20: cut at 0.10.
    p_mal = np.concatenate([np.arange(1, 21) / 20, np.full(10, 0.07)])
    y_mal = np.concatenate([np.ones(20), np.zeros(10)])
    t = threshold_for_sensitivity(y_mal, p_mal, 0.95)
    assert t == pytest.approx(0.10)
    sens, spec = sens_spec(y_mal, p_mal, t)
    assert sens == pytest.approx(19 / 20) and spec == pytest.approx(1.0)
    # 100% sensitivity must take the lowest malignant score, 0.05, which lets all benign (0.07) through.
    t_all = threshold_for_sensitivity(y_mal, p_mal, 1.0)
    assert t_all == pytest.approx(0.05)
    assert sens_spec(y_mal, p_mal, t_all) == (1.0, 0.0)


def test_ece_by_hand():
    # Two bins used: conf 0.9 with 2 of 3 right, conf 0.6 with 1 of 1 right.
    probs = np.vstack([onehotish([NV, NV, NV], 0.9), onehotish([MEL], 0.6)])
    y = np.array([NV, NV, MEL, MEL])
    expected = 3 / 4 * abs(2 / 3 - 0.9) + 1 / 4 * abs(1.0 - 0.6)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)


def test_bootstrap_resamples_whole_lesions():
    """Ten nevus lesions, one with 9 identical images: the CI must see 10 nevus units, not 18 images."""
    y = np.array([NV] * 9 + [NV] * 9 + [MEL])
    pred = np.array([NV] * 9 + [MEL] * 9 + [MEL])  # lesion L0 right, the 9 one-image nevi wrong, the melanoma right
    lesions = np.array(["L0"] * 9 + [f"N{i}" for i in range(9)] + ["M0"])
    res = lesion_bootstrap(y, onehotish(pred), lesions, threshold=None, n_boot=400, seed=1)
    acc = res["accuracy"]
    assert acc["value"] == pytest.approx(10 / 19)
    # Drawing L0 k times among the 10 nevus lesions gives (9k + 1) / (9k + (10 - k) + 1); k = 0 is likely.
    assert acc["ci_low"] == pytest.approx(1 / 11)
    # k ~ Binomial(10, 0.1): P(k >= 3) = 0.07 but P(k >= 4) = 0.013, so the 97.5th percentile is k = 3.
    assert acc["ci_high"] == pytest.approx(28 / 35)
    # An image-level bootstrap would put the lower bound near 0.3; lesion resampling is far wider.
    image_level = lesion_bootstrap(y, onehotish(pred), np.arange(19).astype(str), threshold=None, n_boot=400, seed=1)
    assert image_level["accuracy"]["ci_low"] > 0.25


def test_every_resample_keeps_every_class():
    """A class with one lesion, misclassified: were it left out of a resample (a third of plain resamples),
    balanced accuracy would average over one class fewer and jump to 1; resampling within each class
    keeps it in every resample, so the interval stays at the estimate."""
    y = np.array([NV] * 20 + [MEL] * 20 + [DF])
    pred = np.array([NV] * 20 + [MEL] * 20 + [NV])
    res = lesion_bootstrap(y, onehotish(pred), np.arange(41).astype(str), threshold=None, n_boot=300, seed=0)
    bal = res["balanced_accuracy"]
    assert bal["value"] == pytest.approx(2 / 3)
    assert bal["ci_low"] == bal["ci_high"] == pytest.approx(2 / 3)


def test_the_calibration_error_interval_holds_its_bias_corrected_estimate():
    """A binned ECE is biased upwards, more so in a resample: for calibrated probabilities its percentile
    interval can lie wholly above the estimate. The reported ECE is bias-corrected, inside its interval."""
    y, columns, prior = population_calibrated(n=400, seed=3)
    res = lesion_bootstrap(y, columns, np.arange(len(y)).astype(str), threshold=None, prior=prior, n_boot=200, seed=0)
    ece = res["ece"]
    assert ece["ci_low"] <= ece["value"] <= ece["ci_high"]
    assert ece["value"] < ece["plug_in"] == pytest.approx(expected_calibration_error(y, population(columns, prior)))


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    probs = rng.dirichlet(np.ones(7), 300)
    lesions = (np.arange(300) // 2).astype(str)
    a = lesion_bootstrap(y, probs, lesions, threshold=0.4, n_boot=50, seed=3)
    b = lesion_bootstrap(y, probs, lesions, threshold=0.4, n_boot=50, seed=3)
    assert a == b
    assert set(a) >= {"balanced_accuracy", "macro_auroc", "malignant_auroc", "malignant_ap", "sensitivity", "ece"}
    assert len(CLASSES) == 7


def test_malignant_probability_under_the_training_frequencies():
    # A model trained on class-balanced batches: 0.5 mel, 0.5 nv. Among images that look like this,
    # nv is 8 times as frequent as mel in the population, so p(malignant) is 1/9, not 1/2.
    probs = np.zeros((1, 7))
    probs[0, [MEL, NV]] = 0.5
    prior = np.full(7, 0.01)
    prior[MEL], prior[NV] = 0.08, 0.64
    assert malignant_probability(probs)[0] == pytest.approx(0.5)
    assert malignant_probability(probs, prior)[0] == pytest.approx(1 / 9)
    # A uniform prior changes nothing; the bootstrap reports AUROC of the p_malignant it is given.
    assert malignant_probability(probs, np.full(7, 1 / 7))[0] == pytest.approx(0.5)
    y = np.array([MEL, NV, BCC, BKL])
    p = np.array([[0.0, 0.0, 0.0, 0.0, 0.6, 0.4, 0.0]] * 4)
    lesions = np.arange(4).astype(str)
    ranked = lesion_bootstrap(y, p, lesions, threshold=None, p_malignant=[0.9, 0.1, 0.8, 0.2], n_boot=0)
    assert ranked["malignant_auroc"]["value"] == 1.0


def test_threshold_is_the_highest_one_reaching_the_target_among_collinear_roc_points():
    """20 malignant scores 0.51 ... 0.70, every one above all benign ones: the ROC curve runs straight
    up the left edge, and those collinear points are what roc_curve drops by default. 95% sensitivity
    keeps 19 of 20, so the answer is the second-lowest malignant score, 0.52 (not 0.51)."""
    p_mal = np.concatenate([np.round(np.arange(51, 71) / 100, 2), np.linspace(0.05, 0.45, 30)])
    y_mal = np.concatenate([np.ones(20), np.zeros(30)])
    t = threshold_for_sensitivity(y_mal, p_mal, 0.95)
    assert t == pytest.approx(0.52)
    assert sens_spec(y_mal, p_mal, t) == (pytest.approx(0.95), 1.0)


def population_calibrated(n=20000, seed=0):
    """Labels drawn from population probabilities q, and the class columns a model trained under a
    uniform prior reports for them: q / prior, renormalised. Returns (y, columns, prior)."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    q = rng.dirichlet(prior * 4, n)
    y = np.array([rng.choice(7, p=row / row.sum()) for row in q])
    columns = q / prior
    return y, columns / columns.sum(axis=1, keepdims=True), prior


def test_calibration_is_measured_on_the_population_probabilities():
    """A model whose reported (population) probabilities are calibrated scores an ECE near 0; its
    uniform-prior class columns, scored against population labels, would look badly calibrated."""
    y, columns, prior = population_calibrated()
    lesions = np.arange(len(y)).astype(str)
    with_prior = lesion_bootstrap(y, columns, lesions, threshold=None, prior=prior, n_boot=2)
    assert with_prior["ece"]["value"] < 0.02
    assert expected_calibration_error(y, columns) > 0.1  # what the columns alone would give


def test_export_temperature_is_fitted_on_the_population_probabilities():
    """Calibrated population probabilities need no temperature (T = 1); fitted on the class columns
    against population labels, T would absorb the prior shift instead."""
    import torch

    from skinlesion.serve.export import fit_temperature

    y, columns, prior = population_calibrated(n=5000)
    logits, labels = torch.tensor(np.log(columns), dtype=torch.float32), torch.tensor(y)
    assert fit_temperature(logits, labels, prior.tolist()) == pytest.approx(1.0, abs=0.05)
    assert abs(fit_temperature(logits, labels) - 1.0) > 0.2
