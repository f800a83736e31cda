"""The project's goals, declared before the run, and a whole workflow run judged against them.

The goals are judged on one model declared in advance, the one validation recommends
(:func:`skinlesion.evaluate.metrics.recommended_tier`), scored per test image (the ISIC
convention): its balanced accuracy and malignant AUROC must reach :data:`METRIC_GOALS`. The default
run must keep within :data:`BUDGETS`: the longest train rule and the whole run's wall time.
Per-lesion and metadata rows are reported, not judged. :func:`judge` reads a workflow record
(``benchmarks/record.py workflow``); ``skinlesion.rendered`` only writes its verdicts as a table.
No numerical library is imported here.
"""

from __future__ import annotations

# At least these, for the recommended model per test image.
METRIC_GOALS = {"balanced_accuracy": 0.70, "malignant_auroc": 0.93}
# At most these minutes: the longest train rule, and the whole run from raw data to report.
BUDGETS = {"train_minutes": 30, "wall_minutes": 120}
GOALS = {**METRIC_GOALS, **BUDGETS}


def judged_model(record: dict) -> dict:
    """The one model of a workflow record the goals are judged on: the recommended one."""
    return next(m for m in record["models"] if m["model"] == record["recommended"])


def judge(record: dict) -> dict:
    """A workflow record against the goals.

    ``model``: the judged model's name; ``metrics``: per goal metric, its ``goal``, the test block's
    ``entry`` (value and interval), ``met``, and the same model as deployed (ONNX fp32, no TTA;
    ``deployed``, None when the record has no such score), which is shown, not judged; ``train``:
    the longest train rule's ``model``, ``minutes``, ``budget``, ``met``; ``wall``: the run's
    ``minutes``, ``budget``, ``met``."""
    model = judged_model(record)
    deployed = model.get("deployed", {}).get("fp32", {}).get("test")
    metrics = []
    for key, goal in METRIC_GOALS.items():
        entry = model["test"]["metrics"][key]
        metrics.append(
            {
                "key": key,
                "goal": goal,
                "entry": entry,
                "met": entry["value"] >= goal,
                "deployed": deployed["metrics"][key] if deployed else None,
            }
        )
    longest = max((m for m in record["models"] if "train" in m), key=lambda m: m["train"]["minutes"])
    train = longest["train"]["minutes"]
    return {
        "model": model["model"],
        "metrics": metrics,
        "train": {
            "model": longest["model"],
            "minutes": train,
            "budget": BUDGETS["train_minutes"],
            "met": train <= BUDGETS["train_minutes"],
        },
        "wall": {
            "minutes": record["wall_minutes"],
            "budget": BUDGETS["wall_minutes"],
            "met": record["wall_minutes"] <= BUDGETS["wall_minutes"],
        },
    }
