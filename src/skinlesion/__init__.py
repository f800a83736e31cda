"""skinlesion: a reproducible HAM10000 skin-lesion classification pipeline."""

__version__ = "0.1.0"

# The seven HAM10000 diagnoses, in the column order every table and model output uses.
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Diagnoses counted as malignant for the binary task and for p_malignant.
MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")


def population_probabilities(probs, prior=None):
    """(N, 7) class probabilities in the population the data came from.

    ``prior``: the training split's class frequencies, for a model trained to treat the classes as
    equally frequent (class-balanced sampler, class weights or a logit-adjusted loss). Its
    probabilities assume a uniform prior, which suits the balanced-accuracy argmax, but they
    overstate the rare classes; reweighting by the frequencies and renormalising undoes that.
    Without a prior the probabilities are returned as they are.
    """
    import numpy as np

    probs = np.asarray(probs, dtype=float)
    if prior is None:
        return probs
    probs = probs * np.asarray(prior, dtype=float)
    return probs / probs.sum(axis=1, keepdims=True)


def malignant_probability(probs, prior=None):
    """p_malignant of (N, 7) class probabilities (CLASSES order): the mel + bcc + akiec share of
    their :func:`population_probabilities` under ``prior``."""
    return population_probabilities(probs, prior)[:, [CLASSES.index(c) for c in MALIGNANT]].sum(axis=1)
