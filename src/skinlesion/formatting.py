"""How the report, the model cards and the docs name and print metrics: one table of the metrics and
one way to write a value with its confidence interval, ``0.653 (0.599–0.704)`` (an en dash).

:data:`METRICS` lists every metric a scored block of the metrics JSON holds, in the order the
report's tables show them: its key, its name in table headers, the abbreviation the README's
combined headers use, its description in the model card, and the format of its values. The report
(``skinlesion.report.build`` and its template), the model card (``skinlesion.report.model_card``)
and the docs' rendered tables (``skinlesion.rendered``) all read it. No numerical library is
imported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

# Between the two ends of an interval or a range, everywhere.
DASH = "–"
# What a missing value (None) prints as.
MISSING = "n/a"


class Metric(NamedTuple):
    key: str  # the metrics JSON's key
    header: str  # its name in tables: "balanced accuracy"
    short: str  # abbreviated, in the README's combined headers: "bal. acc."
    card: str  # its name in the model card, with what it measures
    spec: str = ".3f"  # the format of its values


METRICS = (
    Metric("balanced_accuracy", "balanced accuracy", "bal. acc.", "balanced accuracy (mean recall of the diagnoses)"),
    Metric("accuracy", "accuracy", "accuracy", "accuracy"),
    Metric("macro_f1", "macro F1", "macro F1", "macro F1"),
    Metric("macro_auroc", "macro AUROC", "macro AUROC", "macro AUROC (one diagnosis against the rest)"),
    Metric(
        "malignant_auroc", "malignant AUROC", "malignant AUROC", "malignant AUROC (mel + bcc + akiec against the rest)"
    ),
    Metric("malignant_ap", "malignant average precision", "malignant AP", "malignant average precision"),
    Metric("sensitivity", "sensitivity", "sens.", "sensitivity for malignant at the operating threshold"),
    Metric("specificity", "specificity", "spec.", "specificity for malignant at the operating threshold"),
    Metric("ece", "ECE", "ECE", "expected calibration error (bias-corrected)"),
)
BY_KEY = {m.key: m for m in METRICS}
# The two metrics the summaries lead with, each with its interval, and the project's goals judge.
HEADLINE = ("balanced_accuracy", "malignant_auroc")
# The malignant decision at the operating threshold, shown as a pair.
OPERATING = ("sensitivity", "specificity")


def metric(key: str) -> Metric:
    """The specification of the metric ``key``."""
    return BY_KEY[key]


def headers(keys: Iterable[str], short: bool = False, sep: str = " / ") -> str:
    """The names of ``keys`` joined: ``bal. acc. / malignant AUROC``."""
    return sep.join(metric(k).short if short else metric(k).header for k in keys)


def format_value(value: float | None, spec: str = ".3f") -> str:
    """One value in ``spec``; None as n/a."""
    return MISSING if value is None else format(value, spec)


def format_interval(low: float | None, high: float | None, spec: str = ".3f") -> str:
    """``low–high``."""
    return f"{format_value(low, spec)}{DASH}{format_value(high, spec)}"


def format_ci(entry: Mapping, spec: str = ".3f", label: str = "") -> str:
    """A metrics JSON entry (``value``, ``ci_low``, ``ci_high``) as ``value (low–high)``, or with a
    ``label`` before the interval: ``value (95% CI low–high)``."""
    interval = format_interval(entry["ci_low"], entry["ci_high"], spec)
    return f"{format_value(entry['value'], spec)} ({label}{interval})"


def format_values(metrics: Mapping, keys: Iterable[str], sep: str = " / ") -> str:
    """The values of ``keys`` in a block's ``metrics`` joined, each in its metric's format: ``0.942 / 0.635``."""
    return sep.join(format_value(metrics[k]["value"], metric(k).spec) for k in keys)
