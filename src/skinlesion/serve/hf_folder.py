"""The export_hf rule: the transfer tier's trained network as a Hugging Face / timm folder.

``results/export/transfer/hf/`` holds what ``timm.models.save_for_hf`` writes for the trained timm
network (the checkpoint's ``LesionClassifier.net``): ``config.json`` and ``model.safetensors``,
plus the tier's model card as ``README.md`` with the Hub's metadata header (licence, library,
task). ``timm.create_model("local-dir:results/export/transfer/hf", pretrained=True)`` loads it, and
``huggingface-cli upload ORG/NAME results/export/transfer/hf`` (or ``HfApi.upload_folder``) pushes it.

The checkpoint normalises inside the LesionClassifier, which the folder does not hold: config.json's
``pretrained_cfg`` records the mean, std and input size of the checkpoint's hyperparameters (inputs
RGB scaled to 0-1, then normalised, as timm's transforms do), so the folder is usable on its own.
Its ``skinlesion`` block holds what turns the logits into the served probabilities and decision:
the inference contract's temperature, class prior, malignant classes and operating threshold.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from skinlesion.report.model_card import LICENCE

# The Hub's model-card metadata (YAML front matter of README.md).
HUB_METADATA = {
    "license": "cc-by-nc-4.0",
    "library_name": "timm",
    "pipeline_tag": "image-classification",
    "tags": ["image-classification", "timm", "dermatology", "dermoscopy", "ham10000", "research-only"],
}
# Longer names of the HAM10000 diagnoses (timm's label_descriptions).
DIAGNOSES = {
    "akiec": "actinic keratosis or intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion (solar lentigo, seborrhoeic keratosis, lichen-planus-like keratosis)",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
    "benign": "benign (not mel, bcc or akiec)",
    "malignant": "malignant (mel, bcc or akiec)",
}
FILES = ("config.json", "model.safetensors", "README.md")


def readme(card: str) -> str:
    """The folder's README.md: the Hub's metadata header, then the model card."""
    import yaml

    return "---\n" + yaml.safe_dump(HUB_METADATA, sort_keys=False) + "---\n\n" + card


def hf_config(model, contract: dict) -> tuple[dict, dict]:
    """(model_config, data_config) for ``save_for_hf`` of a checkpoint's network."""
    hp = model.hparams
    names = list(hp.class_names)
    model_config = {
        "label_names": names,
        "label_descriptions": {name: DIAGNOSES.get(name, name) for name in names},
        "pretrained_cfg": {
            "tag": "ham10000",
            "license": "cc-by-nc-4.0",
            "description": (
                f"skinlesion {contract['tier']} tier: {hp.model['backbone']} fine-tuned on HAM10000 dermatoscopic "
                f"images ({', '.join(names)}). Research use only, not a medical device; weights under {LICENCE}."
            ),
            "origin_url": "https://doi.org/10.7910/DVN/DBW86T",
            "paper_ids": "doi:10.1038/sdata.2018.161",
        },
        "skinlesion": {
            "tier": contract["tier"],
            "task": contract["task"],
            "inputs": "RGB scaled to [0, 1], then (x - mean) / std with pretrained_cfg's mean, std and input_size",
            "probabilities": "softmax(logits / temperature + log class_prior); p_malignant: malignant_classes' sum",
            "temperature": contract["temperature"],
            "class_prior": contract["class_prior"],
            "malignant_classes": contract["malignant_classes"],
            "operating_threshold": contract["operating_threshold"],
            "onnx_sha256": contract["onnx_sha256"],
            "weights_sha256": contract["weights_sha256"],
        },
    }
    size = int(hp.image_size)
    data_config = {
        "input_size": (3, size, size),
        "mean": tuple(float(v) for v in hp.mean),
        "std": tuple(float(v) for v in hp.std),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    return model_config, data_config


def export_hf_folder(
    ckpt: str | os.PathLike,
    contract_json: str | os.PathLike,
    card_md: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict:
    """Write the timm folder of the checkpoint's network with the card as README.md; returns config.json.

    The checkpoint must be the one the contract was exported from (same weights SHA-256)."""
    import torch
    from timm.models import save_for_hf

    from skinlesion.serve.export import weights_sha256
    from skinlesion.train.module import load_classifier

    contract = json.loads(Path(contract_json).read_text())
    model = load_classifier(ckpt).float()
    if model.hparams.tier != "transfer" or "backbone" not in model.hparams.model:
        raise ValueError(f"{ckpt}: the {model.hparams.tier} tier's network is not a timm model")
    if weights_sha256(model) != contract["weights_sha256"]:
        raise ValueError(f"{ckpt}: its weights are not the ones {contract_json} was exported from")
    net = model.net.to(memory_format=torch.contiguous_format).eval()
    model_config, data_config = hf_config(model, contract)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_for_hf(net, str(tmp), model_config=model_config, safe_serialization=True, data_config=data_config)
        (tmp / "README.md").write_text(readme(Path(card_md).read_text()))
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((out / "config.json").read_text())
