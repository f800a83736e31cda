"""Figures of the workflow (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from skinlesion import CLASSES  # noqa: E402
from skinlesion.formatting import format_interval, format_value  # noqa: E402
from skinlesion.io import atomic_path  # noqa: E402
from skinlesion.tables import load_development_table  # noqa: E402
from skinlesion.train.datamodule import color_transform, eval_transform, train_transform  # noqa: E402


def save(fig, dest: str | os.PathLike, dpi: int = 110) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=os.path.splitext(str(dest))[1][1:] or "png")
    plt.close(fig)


def augment_preview(
    images_npy, index_csv, split_csv, out_png, *, settings: dict, seed: int, per_class: int = 2, variants: int = 4
) -> None:
    """For ``per_class`` training images of each class: the network input, then augmented draws."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    table = load_development_table(index_csv, split_csv)
    images = np.load(images_npy, mmap_mode="r")
    size = settings["image_size"]
    plain, geometric = eval_transform(size), train_transform(size, settings["augment"])
    color = color_transform(settings["augment"])

    def augment(img: torch.Tensor) -> torch.Tensor:
        out = geometric(img)
        return out if color is None else color(out[None])[0].round().clamp(0, 255).to(torch.uint8)

    rows = []
    for dx in CLASSES:
        candidates = table.loc[(table["dx"] == dx) & (table["split"] == "train"), ["row", "image_id"]].to_numpy()
        for row, image_id in candidates[rng.permutation(len(candidates))[:per_class]]:
            rows.append((dx, image_id, torch.from_numpy(np.ascontiguousarray(images[row])).permute(2, 0, 1)))
    fig, axes = plt.subplots(len(rows), variants + 1, figsize=(1.6 * (variants + 1), 1.6 * len(rows)), squeeze=False)
    for r, (dx, image_id, img) in enumerate(rows):
        panels = [plain(img)] + [augment(img) for _ in range(variants)]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{dx}\n{image_id}", fontsize=7)
            if r == 0:
                ax.set_title("original" if c == 0 else f"augmented {c}", fontsize=8)
    fig.suptitle(f"Training augmentation at {size}px (original = network input without augmentation)", fontsize=9)
    save(fig, out_png)


def evaluation_figures(
    predictions_csv, metrics_json, out_confusion, out_roc, out_reliability, *, tier: str, deployed=None
) -> None:
    """Confusion matrices (counts, row-normalised), ROC curves (per class, malignant), reliability.

    ``deployed``: (predictions CSV, metrics JSON) of the export scored as served (the evaluate_deployed
    rule); the reliability diagram then shows the probabilities the service returns beside the evaluate
    rule's."""
    import json

    import pandas as pd
    import seaborn as sns
    from sklearn.metrics import confusion_matrix, roc_curve

    from skinlesion import population_probabilities
    from skinlesion.evaluate.metrics import labelled, malignant_indices, reliability_bins

    preds = pd.read_csv(predictions_csv)
    report = json.loads(Path(metrics_json).read_text())
    metrics = report["test"]
    classes, y, probs = labelled(preds)

    cm = confusion_matrix(y, probs.argmax(axis=1), labels=range(len(classes)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    with np.errstate(invalid="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True)
    for ax, data, fmt, title in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised (recall)")):
        sns.heatmap(
            data, annot=True, fmt=fmt, cmap="Blues", cbar=False, ax=ax, xticklabels=classes, yticklabels=classes
        )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{tier}: confusion matrix, {title}", fontsize=10)
    save(fig, out_confusion)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for i, name in enumerate(classes):
        if 0 < (y == i).sum() < len(y):
            fpr, tpr, _ = roc_curve(y == i, probs[:, i])
            auc = metrics["per_class"][name]["auroc"]
            axes[0].plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    y_mal = np.isin(y, malignant_indices(classes))
    fpr, tpr, _ = roc_curve(y_mal, preds["p_malignant"])
    m = metrics["metrics"]
    auc = m["malignant_auroc"]
    interval = format_interval(auc["ci_low"], auc["ci_high"])
    axes[1].plot(
        fpr,
        tpr,
        color="C3",
        label=f"malignant vs benign (AUROC {format_value(auc['value'])}, 95% CI {interval})",
    )
    if "sensitivity" in m:
        axes[1].plot(
            1 - m["specificity"]["value"],
            m["sensitivity"]["value"],
            "ko",
            label=f"threshold {metrics['threshold']:.3f} chosen on val",
        )
    for ax, title in ((axes[0], "per class (one vs rest)"), (axes[1], "malignant (mel + bcc + akiec)")):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{tier}: ROC, {title}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    save(fig, out_roc)

    # Calibration of the population probabilities, as the metrics measure it (skinlesion.evaluate.metrics).
    curves = [("evaluate rule", y, population_probabilities(probs, report.get("class_prior")), m["ece"])]
    if deployed:
        served = pd.read_csv(deployed[0])
        block = json.loads(Path(deployed[1]).read_text())
        _, y_served, columns = labelled(served)
        returned = population_probabilities(columns, block.get("class_prior"))
        curves.insert(
            0, ("as deployed (returned)", y_served, returned, block["onnx"]["fp32"]["test"]["metrics"]["ece"])
        )
    fig, ax = plt.subplots(figsize=(5, 4.6))
    width = 1 / 15 / len(curves)
    for k, (name, truth, population, ece) in enumerate(curves):
        bins = reliability_bins(truth, population)
        centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
        ax.bar(centers + (k - (len(curves) - 1) / 2) * width, np.nan_to_num(bins["accuracy"]), width=width,
               edgecolor="k", alpha=0.7, label=f"{name}: ECE {ece['value']:.3f}")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.set_xlabel("confidence (top-class population probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{tier}: reliability", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, out_reliability)


def training_curves(histories: dict[str, str], out_png) -> None:
    """Per-tier training loss and validation metrics by epoch."""
    import pandas as pd

    panels = [
        ("train/loss", "training loss"),
        ("val/loss", "validation loss"),
        ("val/bal_acc", "validation balanced accuracy"),
        ("val/malignant_auroc", "validation malignant AUROC"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for tier, path in histories.items():
        history = pd.read_csv(path)
        for ax, (column, title) in zip(axes, panels, strict=True):
            if column in history:
                ax.plot(history["epoch"] + 1, history[column], marker=".", label=tier)
                ax.set_title(title, fontsize=10)
                ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, out_png)
