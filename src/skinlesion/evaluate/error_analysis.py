"""Error analysis of one tier's test predictions: what the notebook shows and the report quotes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import torch

from skinlesion import MALIGNANT
from skinlesion.evaluate.metrics import is_binary, sens_spec

AGE_BANDS = [0, 30, 45, 60, 75, 120]


def worst_false_negatives(preds: pd.DataFrame, threshold: float, k: int = 8) -> pd.DataFrame:
    """Malignant lesions called benign (p_malignant below the threshold), most confident first."""
    missed = preds[preds["true_dx"].isin(MALIGNANT) & (preds["p_malignant"] < threshold)]
    return missed.sort_values("p_malignant", kind="stable").head(k)


def true_class(preds: pd.DataFrame) -> pd.Series:
    """What dx is right against: true_dx, or benign / malignant for a binary model's predictions."""
    if is_binary(preds):
        return preds["true_dx"].isin(MALIGNANT).map({True: "malignant", False: "benign"})
    return preds["true_dx"]


def confused_pairs(preds: pd.DataFrame, k: int = 8) -> pd.DataFrame:
    """The most frequent (true, predicted) pairs among the errors, with the share of the true class."""
    preds = preds.assign(true_dx=true_class(preds))
    errors = preds[preds["true_dx"] != preds["dx"]]
    pairs = errors.groupby(["true_dx", "dx"]).size().rename("count").reset_index()
    pairs["share_of_true_class"] = pairs["count"] / pairs["true_dx"].map(preds["true_dx"].value_counts())
    pairs = pairs.rename(columns={"dx": "predicted_dx"})
    return (
        pairs.sort_values(["count", "true_dx"], ascending=[False, True], kind="stable").head(k).reset_index(drop=True)
    )


def subgroup_metrics(preds: pd.DataFrame, index: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Counts, accuracy and malignant sensitivity/specificity by age band, sex, localization, dx_type."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    meta = index.set_index("image_id")[["age", "sex", "localization", "dx_type"]]
    table = preds.join(meta, on="image_id")
    table["truth"] = true_class(preds)
    table["age_band"] = pd.cut(table["age"], AGE_BANDS, right=False).astype(str).replace("nan", "unknown")
    rows = []
    for column in ("age_band", "sex", "localization", "dx_type"):
        for value, group in table.groupby(column, sort=True):
            y_mal = group["true_dx"].isin(MALIGNANT).to_numpy()
            row = {
                "attribute": column,
                "group": value,
                "images": len(group),
                "malignant": int(y_mal.sum()),
                "accuracy": (group["truth"] == group["dx"]).mean(),
                "balanced_accuracy": balanced_accuracy_score(group["truth"], group["dx"]),
                "malignant_auroc": np.nan,
                "sensitivity": np.nan,
                "specificity": np.nan,
            }
            if 0 < y_mal.sum() < len(y_mal):
                row["malignant_auroc"] = roc_auc_score(y_mal, group["p_malignant"])
                row["sensitivity"], row["specificity"] = sens_spec(y_mal, group["p_malignant"].to_numpy(), threshold)
            rows.append(row)
    return pd.DataFrame(rows)


def last_conv(net: torch.nn.Module) -> torch.nn.Module:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional layer")
    return convs[-1]


def gradcam(model, images: np.ndarray, targets: list[int]) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input size, for uint8 (N, S, S, 3) images.

    Uses captum's LayerGradCam on the network's last convolution, on the device the model is on.
    """
    from captum.attr import LayerAttribution, LayerGradCam
    from torchvision.transforms import v2

    model.eval()
    size = model.hparams.image_size
    x = v2.Resize((size, size), antialias=True)(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2))
    x = x.float().to(model.device).requires_grad_(True)
    cam = LayerGradCam(model, last_conv(model.net))
    attributions = cam.attribute(x, target=torch.as_tensor(targets), relu_attributions=True)
    maps = LayerAttribution.interpolate(attributions, (size, size), interpolate_mode="bilinear")[:, 0].detach()
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return (maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).cpu().numpy()


def gallery_png(images: np.ndarray, captions: list[str], cams: np.ndarray | None = None) -> bytes:
    """A row of images (and, with ``cams``, a second row of Grad-CAM overlays) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = 2 if cams is not None else 1
    fig, axes = plt.subplots(rows, max(n, 1), figsize=(2.0 * max(n, 1), 2.2 * rows), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[0, i].set_title(captions[i], fontsize=7)
        if cams is not None:
            size = cams.shape[-1]
            from PIL import Image

            small = np.asarray(Image.fromarray(images[i]).resize((size, size)))
            axes[1, i].imshow(small)
            axes[1, i].imshow(cams[i], cmap="jet", alpha=0.45)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def highlights_html(tier: str, fn_gallery: bytes, pairs: pd.DataFrame, subgroups: pd.DataFrame, n_missed: int) -> str:
    """The fragment the report embeds: missed malignant lesions, confused pairs, subgroup table."""
    img = base64.b64encode(fn_gallery).decode()
    fmt = {"float_format": lambda v: f"{v:.3f}", "index": False, "border": 0, "classes": "table", "na_rep": ""}
    return (
        f"<p>Tier analysed: <b>{tier}</b> (best validation balanced accuracy). {n_missed} malignant test image(s) fall "
        f"below the operating threshold.</p>"
        f"<h3>Worst false negatives (malignant called benign), with Grad-CAM</h3>"
        f'<img src="data:image/png;base64,{img}" alt="worst false negatives">'
        f"<h3>Most confused class pairs</h3>{pairs.to_html(**fmt)}"
        f"<h3>Metrics by subgroup</h3>{subgroups.to_html(**fmt)}"
    )
