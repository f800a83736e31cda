"""The three model tiers: networks only. Training logic lives in :mod:`skinlesion.lightning`.

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

log = logging.getLogger(__name__)


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


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but cannot be had."""


def build_transfer(
    num_classes: int,
    backbone: str = "efficientnet_b0",
    pretrained: bool = False,
    weights_file: str | None = None,
    dropout: float = 0.2,
    drop_path: float = 0.0,
) -> nn.Module:
    """A timm backbone with a fresh ``num_classes`` head.

    ``pretrained=True`` loads ImageNet weights from ``weights_file`` when given (a timm/HF
    ``.safetensors`` or ``.pth`` state dict), else through timm from the Hugging Face hub.
    """
    import timm

    kwargs = {"num_classes": num_classes, "drop_rate": dropout}
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    return deterministic_pooling(_create(timm, backbone, pretrained, weights_file, kwargs))


def _create(timm, backbone: str, pretrained: bool, weights_file: str | None, kwargs: dict) -> nn.Module:
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise PretrainedWeightsError(f"train.transfer.weights_file: {path} does not exist")
        # timm loads the file and drops the ImageNet classifier whose shape differs from ours.
        return timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    try:
        return timm.create_model(backbone, pretrained=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise PretrainedWeightsError(
            f"could not fetch ImageNet weights for timm model {backbone!r} ({type(exc).__name__}: {exc}). "
            "This machine may be offline. Either download the weights elsewhere (e.g. "
            f"`huggingface-cli download timm/{backbone}.<tag> model.safetensors`) and set "
            "train.transfer.weights_file to that file, or set train.transfer.pretrained: false "
            "to train the same architecture from scratch."
        ) from exc


def build_model(tier: str, num_classes: int, params: dict) -> nn.Module:
    """The network of ``tier`` with its hyperparameters from the config."""
    if tier == "baseline_cnn":
        return BaselineCNN(num_classes, **params)
    if tier == "resnet":
        return ResNet(num_classes, **params)
    if tier == "transfer":
        return build_transfer(num_classes, **params)
    raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
