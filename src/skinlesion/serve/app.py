"""Streamlit app: upload a dermatoscopic image (or pick a bundled sample) and see what a tier predicts.

Start it with ``skinlesion app --model results/export/baseline_cnn`` (in-process ONNX Runtime) or
add ``--service http://127.0.0.1:8000`` to ask a running ``skinlesion serve`` instead. The
Grad-CAM overlay needs the tier's PyTorch checkpoint (the one the sidecar names, checked against
the weights' SHA-256). Settings come from the environment the ``skinlesion app`` command sets:
SKINLESION_MODEL, SKINLESION_SERVICE_URL, SKINLESION_CHECKPOINT. SKINLESION_SAMPLES, which no
command sets, optionally names a folder of samples other than data/sample.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from skinlesion.serve.guard import REASON_TEXT
from skinlesion.serve.inference import MAX_PIXELS, ImageError, OnnxClassifier, Upload, read_upload

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = Path(os.environ.get("SKINLESION_MODEL", "results/export/baseline_cnn"))
SERVICE_URL = os.environ.get("SKINLESION_SERVICE_URL") or None
SAMPLES = Path(os.environ.get("SKINLESION_SAMPLES", ROOT / "data" / "sample"))
NOTICE = (
    "Research tool, not a diagnosis. This model was trained on one public dataset (HAM10000) and "
    "has not been validated for clinical use. Anyone worried about a skin lesion should see a doctor."
)


@st.cache_resource
def classifier(model_dir: str) -> OnnxClassifier:
    return OnnxClassifier(model_dir)


@st.cache_resource
def torch_model(checkpoint: str, expected_sha256: str):
    """The checkpoint behind the export, for Grad-CAM; None when it is missing or does not match."""
    from skinlesion.serve.export import weights_sha256
    from skinlesion.train.module import load_classifier

    path = Path(checkpoint)
    if not path.is_file():
        return None
    try:
        model = load_classifier(path, "auto")  # Grad-CAM on the GPU when there is one
    except Exception:  # noqa: BLE001 - any unreadable file means no Grad-CAM, not a broken app
        return None
    return model if weights_sha256(model) == expected_sha256 else None


@st.cache_data
def sample_images(samples: str) -> dict[str, tuple[str, str]]:
    """label -> (zip, member) for two bundled images per diagnosis."""
    meta = pd.read_csv(Path(samples) / "HAM10000_metadata.csv")
    members = {}
    for zpath in sorted(Path(samples).glob("*.zip")):
        with zipfile.ZipFile(zpath) as zf:
            members |= {Path(n).stem: (str(zpath), n) for n in zf.namelist() if n.endswith(".jpg")}
    meta = meta[meta["image_id"].isin(list(members))].sort_values("image_id")
    picked = meta.groupby("dx").head(2).sort_values(["dx", "image_id"])
    return {f"{r.image_id} (labelled {r.dx})": members[r.image_id] for r in picked.itertuples()}


def read_member(zpath: str, member: str) -> bytes:
    with zipfile.ZipFile(zpath) as zf:
        return zf.read(member)


def predict(name: str, data: bytes, upload: Upload) -> dict:
    if SERVICE_URL:
        import requests

        response = requests.post(f"{SERVICE_URL}/predict", files={"files": (name, data)}, timeout=60)
        if response.status_code != 200:
            raise ImageError(name, response.json().get("detail", response.text), response.status_code)
        body = response.json()
        return body["predictions"][0] | {"model_version": body["model_version"]}
    clf = classifier(str(MODEL_DIR))
    return clf.predict([upload])[0].as_dict() | {"model_version": clf.version}


def overlay(square: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps
    from PIL import Image

    size = square.shape[0]
    cam = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    heat = colormaps["jet"](cam / 255.0)[..., :3] * 255
    return (0.55 * square + 0.45 * heat).astype(np.uint8)


st.set_page_config(page_title="skinlesion", layout="wide")
st.title("skinlesion: dermatoscopic image classifier")
st.warning(NOTICE)

clf = classifier(str(MODEL_DIR))
contract = clf.contract
st.caption(
    f"Model {clf.version} ({contract['tier']}, {contract['task']}); "
    f"{'service ' + SERVICE_URL if SERVICE_URL else 'in-process ONNX Runtime'}."
)

source = st.radio("Image", ["Bundled sample image", "Upload an image"], horizontal=True)
name = data = None
if source == "Upload an image":
    upload = st.file_uploader("A dermatoscopic image (JPEG or PNG)", type=["jpg", "jpeg", "png"])
    if upload is not None:
        name, data = upload.name, upload.getvalue()
else:
    samples = sample_images(str(SAMPLES))
    label = st.selectbox("Sample image (HAM10000, CC BY-NC 4.0)", list(samples))
    name, data = label.split(" ")[0], read_member(*samples[label])

if data is not None:
    try:
        upload = read_upload(name, data, size=clf.cache_size, max_pixels=MAX_PIXELS)
        result = predict(name, data, upload)
    except ImageError as exc:
        st.error(str(exc))
        st.stop()
    square = upload.square
    if not result["accepted"]:
        st.error(
            "Not a dermatoscopic image of the kind this model knows ("
            + ", ".join(REASON_TEXT[r] for r in result["reasons"])
            + "). The prediction below is shown for inspection only; do not use it."
        )
    threshold = clf.threshold
    left, mid, right = st.columns(3)
    left.image(square, caption=name, width="stretch")
    mid.metric("Predicted class", result["predicted_class"])
    mid.metric(
        "Malignant probability",
        f"{result['p_malignant']:.2f}",
        delta=f"{result['p_malignant'] - threshold:+.2f} vs threshold {threshold:.2f}",
        delta_color="inverse",
    )
    verdict = "above" if result["decision"] == "malignant" else "below"
    mid.markdown(
        f"**Decision: {result['decision']}** ({verdict} the operating threshold {threshold:.3f}, chosen for "
        f"{contract['threshold_selection']['target_sensitivity']:.0%} sensitivity on the validation split)."
    )
    probs = pd.DataFrame({"probability": result["probabilities"]})
    mid.bar_chart(probs, horizontal=True, height=260)
    checkpoint = os.environ.get("SKINLESION_CHECKPOINT") or contract.get("checkpoint", "")
    model = torch_model(checkpoint, contract["weights_sha256"])
    if model is None:
        right.info("Grad-CAM needs the tier's checkpoint (set --checkpoint); it was not found or does not match.")
    else:
        from skinlesion.evaluate.error_analysis import gradcam

        target = list(model.hparams.class_names).index(result["predicted_class"])
        cam = gradcam(model, square[None], [target])[0]
        right.image(overlay(square, cam), caption=f"Grad-CAM for '{result['predicted_class']}'", width="stretch")
    with st.expander("Raw output"):
        st.json(result)
    st.download_button("Download result (JSON)", json.dumps(result, indent=2), "result.json")
