"""The model_card rule: a model card per exported model, rendered from the evaluation files.

``results/export/{tier}/MODEL_CARD.md`` says what the exported model is for and not for, what it
was trained on and under which licence, how it scores **as deployed** (the evaluate_deployed rule's
file: the ONNX model as the service runs it, no TTA, its temperature and threshold) on the test split
and the external set, how it scores in subgroups of the test split by sex, age band and body site,
its known limits, and the provenance its inference contract records. Nothing in it is typed: every
number is read from the evaluation files or recomputed from the deployed test predictions, and all
of them are also written to ``MODEL_CARD.json`` beside the card (tests/test_model_card.py checks
each against the evaluation files and every number in the card against that file).

Subgroup rows score the deployed test predictions (``p_malignant``) of the images in the subgroup,
malignant against benign, with the evaluation's lesion bootstrap
(:func:`skinlesion.evaluate.metrics.lesion_bootstrap`, lesions resampled within the malignant and
the benign ones; the contract's threshold, the evaluation's ``n_boot`` and seed). A subgroup gets a
number only when it holds at least ``min_cases`` malignant and ``min_cases`` benign lesions, and a
metric only when its 95 % interval is at most ``max_ci_width`` wide; otherwise the card says
"too few to say".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from skinlesion import MALIGNANT, formatting
from skinlesion.data.preprocess import read_index
from skinlesion.io import atomic_path

# The metrics the card shows for a whole test set, in order, with their names in the card
# (skinlesion.formatting's specification).
METRICS = tuple((m.key, m.card) for m in formatting.METRICS)
# The subgroup metrics, malignant against benign at the contract's threshold.
SUBGROUP_METRICS = tuple((key, formatting.metric(key).header) for key in ("malignant_auroc", *formatting.OPERATING))
# (label, lowest age in the band, first age above it); ages missing from the metadata are "unknown".
AGE_BANDS = (("<30", None, 30), ("30-49", 30, 50), ("50-69", 50, 70), ("≥70", 70, None))
UNKNOWN = "unknown"
# The index column each subgroup attribute comes from.
ATTRIBUTES = (("sex", "sex"), ("age band", "age"), ("body site", "localization"))
TOO_FEW = "too few to say"
# Fixed text the card quotes (the only numbers in the card that come from no evaluation file).
CITATION = (
    "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source "
    "dermatoscopic images of common pigmented skin lesions. Sci Data 5, 180161 (2018), "
    "doi:10.1038/sdata.2018.161; files at Harvard Dataverse, doi:10.7910/DVN/DBW86T."
)
LICENCE = "CC BY-NC 4.0 (Creative Commons Attribution-NonCommercial 4.0 International)"
CI_LEVEL = "95 %"


def age_band(age) -> str:
    """The card's age band of an age in years (NaN: unknown)."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return UNKNOWN
    for label, low, high in AGE_BANDS:
        if (low is None or age >= low) and (high is None or age < high):
            return label
    raise AssertionError(age)


def subgroup_labels(index: pd.DataFrame, column: str) -> pd.Series:
    """Each image's subgroup of one attribute (``column`` of the data index), missing values unknown."""
    if column == "age":
        return index["age"].map(age_band)
    return index[column].fillna(UNKNOWN).astype(str)


def _interval(metric: dict) -> dict:
    return {"value": metric["value"], "ci_low": metric["ci_low"], "ci_high": metric["ci_high"]}


def subgroup_rows(
    preds: pd.DataFrame,
    index: pd.DataFrame,
    *,
    threshold: float,
    n_boot: int,
    seed: int,
    min_cases: int,
    max_ci_width: float,
) -> list[dict]:
    """One row per subgroup of the test predictions ``preds`` (image_id, lesion_id, true_dx, class
    columns, p_malignant, dx) by sex, age band and body site (from ``index``): its image and lesion
    counts and, when it holds ``min_cases`` malignant and benign lesions, the malignant AUROC and the
    sensitivity and specificity at ``threshold`` with lesion-bootstrap 95 % intervals, each marked
    ``shown`` when its interval is at most ``max_ci_width`` wide."""
    import numpy as np

    from skinlesion.evaluate.metrics import BINARY_CLASSES, lesion_bootstrap

    meta = index.set_index("image_id")
    missing = sorted(set(preds["image_id"]) - set(meta.index))
    if missing:
        raise ValueError(f"the data index has no row for test image(s) {missing[:5]}")
    meta = meta.loc[preds["image_id"]]
    malignant = preds["true_dx"].isin(MALIGNANT).to_numpy()
    rows = []
    for attribute, column in ATTRIBUTES:
        labels = subgroup_labels(meta, column).to_numpy()
        counts = pd.Series(labels).value_counts()
        if attribute == "age band":
            order = [band for band, *_ in AGE_BANDS] + [UNKNOWN]
        else:  # largest first, unknown last
            order = sorted(counts.index, key=lambda name: (name == UNKNOWN, -counts[name], name))
        for name in order:
            mask = labels == name
            if not mask.any():
                continue
            sub = preds[mask]
            row = {
                "attribute": attribute,
                "subgroup": name,
                "n_images": int(mask.sum()),
                "n_lesions": int(sub["lesion_id"].nunique()),
                "n_malignant_images": int(malignant[mask].sum()),
                "n_malignant_lesions": int(sub.loc[malignant[mask], "lesion_id"].nunique()),
                "n_benign_lesions": int(sub.loc[~malignant[mask], "lesion_id"].nunique()),
                "metrics": {},
            }
            enough = min(row["n_malignant_lesions"], row["n_benign_lesions"]) >= min_cases
            scored = {}
            if enough:
                p = sub["p_malignant"].to_numpy(dtype=float)
                scored = lesion_bootstrap(
                    malignant[mask].astype(int),
                    np.column_stack([1 - p, p]),
                    sub["lesion_id"].to_numpy(),
                    threshold=threshold,
                    p_malignant=p,
                    classes=BINARY_CLASSES,
                    n_boot=n_boot,
                    seed=seed,
                )
            for key, _ in SUBGROUP_METRICS:
                if key in scored:
                    metric = _interval(scored[key])
                    wide = metric["ci_high"] - metric["ci_low"] > max_ci_width
                    row["metrics"][key] = metric | {"shown": not wide, "why": "CI too wide" if wide else None}
                else:
                    row["metrics"][key] = {"shown": False, "why": f"fewer than {min_cases} malignant or benign lesions"}
            rows.append(row)
    return rows


def _blocks(result: dict, keys=tuple(k for k, _ in METRICS)) -> dict:
    """A scored block reduced to what the card shows: counts, threshold and the metrics' intervals."""
    out = {k: result[k] for k in ("n_images", "n_lesions", "threshold") if k in result}
    out["metrics"] = {k: _interval(result["metrics"][k]) for k in keys if k in result["metrics"]}
    if "bootstrap_unit" in result:
        out["bootstrap_unit"] = result["bootstrap_unit"]
    return out


def network_description(hparams: dict) -> dict:
    """The network of a checkpoint as the card states it (from its hyperparameters)."""
    model = dict(hparams["model"])
    scratch = "random weights (trained from scratch)"
    if hparams["tier"] == "transfer":
        imagenet = hparams.get("pretrained_weights") if model.get("pretrained") else None
        return {
            "kind": "timm",
            "architecture": model["backbone"],
            "initialisation": "ImageNet weights" if model.get("pretrained") else scratch,
            "imagenet_weights": imagenet,
        }
    return {
        "kind": "skinlesion",
        "architecture": {"baseline_cnn": "BaselineCNN", "resnet": "ResNet"}.get(hparams["tier"], hparams["tier"]),
        "initialisation": scratch,
        "imagenet_weights": None,
        "widths": list(model.get("widths", [])),
    }


def source_images(provenance: dict, dataverse_md5: dict[str, str]) -> str:
    """``dataverse`` when the raw image files the run read are Dataverse's originals (their MD5s the
    ones the config pins), ``reencoded`` when they are another copy (a downscaled mirror), else unknown."""
    used = provenance.get("data_checksums") or {}
    images = {name: md5 for name, md5 in dataverse_md5.items() if name.startswith("HAM10000_images")}
    if not images or not all(name in used for name in images):
        return UNKNOWN
    return "dataverse" if all(used[name] == md5 for name, md5 in images.items()) else "reencoded"


def card_facts(
    *,
    contract: dict,
    deployed: dict,
    metrics: dict,
    preds: pd.DataFrame,
    index: pd.DataFrame,
    hparams: dict,
    n_boot: int,
    seed: int,
    min_cases: int,
    max_ci_width: float,
    dataverse_md5: dict[str, str],
    files: dict[str, str],
    hf_folder: str | None = None,
) -> dict:
    """Everything the card states, read from the evaluation files (MODEL_CARD.json)."""
    tier = contract["tier"]
    if deployed["tier"] != tier or metrics["tier"] != tier:
        raise ValueError(f"model card of {tier}: the evaluation files are of {deployed['tier']} and {metrics['tier']}")
    threshold = contract["operating_threshold"]
    fp32_test = deployed["onnx"]["fp32"]["test"]
    if fp32_test["threshold"] != threshold:
        raise ValueError(f"{tier}: the deployed evaluation used threshold {fp32_test['threshold']}, not {threshold}")
    provenance = contract.get("provenance") or {}
    return {
        "tier": tier,
        "task": contract["task"],
        "model_version": deployed["onnx"]["fp32"]["model_version"],
        "class_names": contract["class_names"],
        "malignant_classes": contract["malignant_classes"],
        "network": network_description(hparams),
        "input_size": contract["input"]["size"],
        "cache_size": contract["preprocess"]["cache_size"],
        "epochs": hparams.get("epochs"),
        "temperature": contract["temperature"],
        "class_prior": contract["class_prior"],
        "operating_threshold": threshold,
        "threshold_selection": contract["threshold_selection"],
        "int8": {"operating_threshold": contract["int8"]["operating_threshold"]} if "int8" in contract else None,
        "as_deployed": {
            precision: {unit: _blocks(block[unit]) for unit in ("test", "external") if unit in block}
            for precision, block in deployed["onnx"].items()
        },
        "evaluate_rule": {
            "tta": metrics["tta"],
            "validation": {k: metrics["validation"][k] for k in ("balanced_accuracy", "malignant_auroc")},
            "test": _blocks(metrics["test"], ("balanced_accuracy", "malignant_auroc")),
        },
        "guard": {
            "quality": contract["guard"]["quality"],
            "ood": {k: contract["guard"]["ood"][k] for k in ("score", "description", "accept_share", "threshold")},
            "accepted": {
                unit: block[unit]["guard"]
                for unit in ("test", "external")
                if unit in (block := deployed["onnx"]["fp32"])
            },
        },
        "subgroups": {
            "scored": "as deployed (ONNX fp32, no TTA), test split",
            "threshold": threshold,
            "n_boot": n_boot,
            "seed": seed,
            "min_cases": min_cases,
            "max_ci_width": max_ci_width,
            "rows": subgroup_rows(
                preds,
                index,
                threshold=threshold,
                n_boot=n_boot,
                seed=seed,
                min_cases=min_cases,
                max_ci_width=max_ci_width,
            ),
        },
        "source_images": source_images(provenance, dataverse_md5),
        "provenance": {
            "git_commit": provenance.get("git_commit", UNKNOWN),
            "config_sha256": provenance.get("config_sha256", UNKNOWN),
            "seed": provenance.get("seed"),
            "data_checksums": provenance.get("data_checksums", {}),
            "onnx_sha256": contract["onnx_sha256"],
            "weights_sha256": contract["weights_sha256"],
            "checkpoint": contract["checkpoint"],
        },
        "files": files,
        "hf_folder": hf_folder,
    }


def _fmt(value, digits: int = 3) -> str:
    return formatting.format_value(value, f".{digits}f")


def render_card(facts: dict) -> str:
    """The card's Markdown (templates/model_card.md.j2) from :func:`card_facts`."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("skinlesion.report", "templates"),
        autoescape=False,  # noqa: S701 - Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    env.filters["fmt"] = _fmt
    env.filters["ci"] = formatting.format_ci
    return env.get_template("model_card.md.j2").render(
        f=facts,
        metrics=METRICS,
        subgroup_metrics=SUBGROUP_METRICS,
        too_few=TOO_FEW,
        citation=CITATION,
        licence=LICENCE,
        ci_level=CI_LEVEL,
    )


def _checkpoint_hparams(ckpt: str | os.PathLike) -> dict:
    import torch

    return dict(torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"])


def model_card(
    contract_json: str | os.PathLike,
    deployed_json: str | os.PathLike,
    deployed_predictions: str | os.PathLike,
    index_csv: str | os.PathLike,
    metrics_json: str | os.PathLike,
    ckpt: str | os.PathLike,
    out_card: str | os.PathLike,
    out_facts: str | os.PathLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_cases: int = 10,
    max_ci_width: float = 0.3,
    dataverse_md5: dict[str, str] | None = None,
    hf_folder: str | None = None,
) -> dict:
    """The model_card rule: ``MODEL_CARD.md`` and ``MODEL_CARD.json`` (the facts it states) of one
    exported model. ``hf_folder``: the Hugging Face folder the card describes, for the transfer tier."""
    read = lambda path: json.loads(Path(path).read_text())  # noqa: E731
    preds = pd.read_csv(deployed_predictions, dtype={"image_id": str, "lesion_id": str, "true_dx": str, "dx": str})
    facts = card_facts(
        contract=read(contract_json),
        deployed=read(deployed_json),
        metrics=read(metrics_json),
        preds=preds,
        index=read_index(index_csv),
        hparams=_checkpoint_hparams(ckpt),
        n_boot=n_boot,
        seed=seed,
        min_cases=min_cases,
        max_ci_width=max_ci_width,
        dataverse_md5=dataverse_md5 or {},
        files={
            "deployed": Path(deployed_json).name,
            "predictions": Path(deployed_predictions).name,
            "metrics": Path(metrics_json).name,
            "index": Path(index_csv).name,
        },
        hf_folder=hf_folder,
    )
    with atomic_path(out_facts) as tmp:
        tmp.write_text(json.dumps(facts, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    with atomic_path(out_card) as tmp:
        tmp.write_text(render_card(facts))
    return facts
