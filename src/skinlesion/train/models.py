"""The three model tiers: networks only. Training logic lives in :mod:`skinlesion.train.module`.

- ``baseline_cnn``: plain Conv3x3-BN-ReLU-MaxPool blocks and a classifier head.
- ``resnet``: a ResNet-style network written here (basic residual blocks, GAP + FC).
- ``transfer``: a timm backbone by name, ImageNet-pretrained or from scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from skinlesion.config import TIERS
from skinlesion.train.weights import PretrainedWeightsError, resolve

log = logging.getLogger(__name__)
__all__ = ["PretrainedWeightsError", "build_model", "build_transfer"]


class GlobalAvgPool(nn.Module):
    """Global average pooling as a mean: unlike nn.AdaptiveAvgPool2d its CUDA backward is deterministic,
    so training stays runnable under ``torch.use_deterministic_algorithms(True)`` on a GPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def deterministic_pooling(net: nn.Module) -> nn.Module:
    """Swap a timm model's adaptive average pooling for the equivalent mean (same outputs)."""
    from timm.layers import SelectAdaptivePool2d
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool

    for module in net.modules():
        if isinstance(module, SelectAdaptivePool2d) and isinstance(module.pool, nn.AdaptiveAvgPool2d):
            module.pool = FastAdaptiveAvgPool(flatten=False)
    return net


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BaselineCNN(nn.Module):
    """Repeated Conv(3x3) -> BatchNorm -> ReLU (``convs_per_block`` times) -> MaxPool(2) blocks."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), convs_per_block: int = 1, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            for i in range(convs_per_block):
                layers += _conv_bn_relu(cin if i == 0 else width, width)
            layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(GlobalAvgPool(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN, plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        # Zero-init the last BN so each block starts as identity (Goyal et al., 2017).
        nn.init.zeros_(self.body[-1].weight)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: 3x3 stem, stages of basic blocks (stride 2 from the second), GAP + FC."""

    def __init__(
        self,
        num_classes: int,
        widths=(32, 64, 128, 256),
        blocks_per_stage=(1, 1, 1, 1),
        stem_stride: int = 1,
        dropout: float = 0.2,
    ):
        super().__init__()
        if len(widths) != len(blocks_per_stage):
            raise ValueError("resnet: widths and blocks_per_stage need the same length")
        self.stem = nn.Sequential(*_conv_bn_relu(3, widths[0], stem_stride))
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, (width, blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            for j in range(blocks):
                stages.append(BasicBlock(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(GlobalAvgPool(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def build_transfer(
    num_classes: int,
    backbone: str = "tf_efficientnet_lite0",
    pretrained: bool = True,
    weights: str = "package",
    dropout: float = 0.2,
    drop_path: float = 0.0,
    init_weights: bool = True,
) -> nn.Module:
    """A timm backbone with a fresh ``num_classes`` head.

    ``pretrained``: initialised from the ImageNet weights that ``weights`` names
    (:mod:`skinlesion.train.weights`: the converted package, ``local-dir:``, ``hf-hub:``), all loaded
    by timm; the ImageNet classifier is dropped. ``init_weights=False`` builds the same network
    without reading any weights (to load a trained checkpoint into it).
    """
    import timm

    kwargs = {"num_classes": num_classes, "drop_rate": dropout}
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    if not (pretrained and init_weights):
        return deterministic_pooling(timm.create_model(backbone, pretrained=False, **kwargs))
    name = resolve(weights, backbone)
    if name.startswith("local-dir:") and not (Path(name.removeprefix("local-dir:")) / "config.json").is_file():
        raise PretrainedWeightsError(
            f"train.transfer.model.weights: {name.removeprefix('local-dir:')}/config.json does not exist; "
            "make the folder with timm's save_for_hf (or the pretrained_weights rule for weights: package)"
        )
    try:
        net = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise PretrainedWeightsError(
            f"could not load ImageNet weights {name!r} for timm model {backbone!r} ({type(exc).__name__}: {exc}). "
            "This machine may be offline: use weights: package (the pinned weights package, no network), "
            "or weights: local-dir:PATH with a folder copied from a machine online, or set "
            "train.transfer.model.pretrained: false to train the same architecture from scratch."
        ) from exc
    return deterministic_pooling(net)


def build_model(tier: str, num_classes: int, params: dict, init_weights: bool = True) -> nn.Module:
    """The network of ``tier`` with its hyperparameters from the config (``init_weights``: see
    :func:`build_transfer`)."""
    if tier == "baseline_cnn":
        return BaselineCNN(num_classes, **params)
    if tier == "resnet":
        return ResNet(num_classes, **params)
    if tier == "transfer":
        return build_transfer(num_classes, **params, init_weights=init_weights)
    raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
