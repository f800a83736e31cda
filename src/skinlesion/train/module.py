"""The LightningModule shared by every tier: normalisation, loss, metrics, optimiser, schedule.

A checkpoint carries everything inference needs in its hyperparameters: tier and network
parameters, task and class names, cache size, input size, and the normalisation (the training
split's channel mean/std, or a pretrained backbone's own), so ``predict`` and the exported models
read preprocessing from the checkpoint.
"""

from __future__ import annotations

import inspect
import math

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
)

from skinlesion import CLASSES, MALIGNANT
from skinlesion.train.models import build_model


def focal_loss(logits, target, weight=None, gamma: float = 2.0, label_smoothing: float = 0.0):
    """Multi-class focal loss (Lin et al., 2017) on top of (weighted, smoothed) cross-entropy."""
    ce = F.cross_entropy(logits, target, weight=weight, reduction="none", label_smoothing=label_smoothing)
    p_true = torch.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    loss = (1 - p_true).pow(gamma) * ce
    if weight is None:
        return loss.mean()
    return loss.sum() / weight[target].sum()


def batch_mixing(num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """MixUp and/or CutMix of a training batch (torchvision transforms v2), or None when both are off.

    The labels come out as class probabilities, which ``F.cross_entropy`` takes as they are."""
    from torchvision.transforms import v2

    mixes = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha else []
    mixes += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha else []
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class LesionClassifier(L.LightningModule):
    """One tier's classifier. Built by :meth:`from_settings`: each constructor argument but those in
    :attr:`NOT_SETTINGS` is the training setting of the same name (``schemas/config.schema.yaml``), so a
    new hyperparameter is a schema key, a config value and an argument here, and the checkpoint's
    hyperparameters hold it under that name."""

    #: Arguments that are not training settings: what the data and the task give (class names,
    #: normalisation, cache size, the imbalance remedy's class weights and priors), and switches.
    NOT_SETTINGS = frozenset(
        {
            "tier",
            "class_names",
            "mean",
            "std",
            "cache_size",
            "class_weights",
            "class_prior",
            "malignant_prior",
            "channels_last",
            "pretrained_weights",
            "init_weights",
        }
    )

    @classmethod
    def from_settings(cls, tier: str, settings: dict, **others) -> LesionClassifier:
        """The classifier of ``tier`` from its validated settings (:func:`skinlesion.config.tier_settings`)
        and ``others``, arguments of :attr:`NOT_SETTINGS`. A setting the constructor takes and
        ``settings`` lacks is a KeyError (no silent default)."""
        if misplaced := others.keys() - cls.NOT_SETTINGS:
            raise TypeError(f"from_settings: {sorted(misplaced)} are read from the settings")
        names = [name for name in inspect.signature(cls.__init__).parameters if name not in {"self", *cls.NOT_SETTINGS}]
        return cls(tier=tier, **{name: settings[name] for name in names}, **others)

    def __init__(
        self,
        tier: str,
        model: dict,
        class_names: list[str],
        mean: list[float],
        std: list[float],
        image_size: int,
        cache_size: int,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        epochs: int = 20,
        loss: str = "ce",
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        class_weights: list[float] | None = None,
        class_prior: list[float] | None = None,
        malignant_prior: list[float] | None = None,
        malignant_loss_weight: float = 0.0,
        channels_last: bool = True,
        pretrained_weights: dict | None = None,
        init_weights: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["init_weights"])
        self.net = build_model(tier, len(class_names), dict(model), init_weights=init_weights)
        if init_weights and model.get("pretrained"):
            # A pretrained backbone sees its inputs normalised as in its pretraining (timm's
            # pretrained_cfg), and the checkpoint records where its weights came from.
            from timm.data import resolve_data_config

            from skinlesion.train.weights import resolve, weights_provenance

            data_cfg = resolve_data_config({}, model=self.net)
            mean, std = [float(v) for v in data_cfg["mean"]], [float(v) for v in data_cfg["std"]]
            self.hparams.update(
                mean=mean,
                std=std,
                pretrained_weights=weights_provenance(resolve(model["weights"], model["backbone"])),
            )
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        log_prior = torch.tensor(class_prior, dtype=torch.float32).log() if class_prior else None
        self.register_buffer("log_prior", log_prior, persistent=False)
        prior = torch.tensor(malignant_prior, dtype=torch.float32) if malignant_prior else None
        self.register_buffer("malignant_prior", prior, persistent=False)
        self.binary = list(class_names) == ["benign", "malignant"]
        self.mix = batch_mixing(len(class_names), mixup_alpha, cutmix_alpha)
        if self.mix is not None and loss == "focal":
            raise ValueError("train: loss: focal takes hard labels; set mixup_alpha and cutmix_alpha to 0 or loss: ce")
        if self.binary and malignant_loss_weight:
            raise ValueError(
                "train: malignant_loss_weight is for task: multiclass; the binary loss is already malignant"
            )
        self.register_buffer("is_malignant", torch.tensor([c in MALIGNANT for c in CLASSES]), persistent=False)
        self.val_metrics = self._metrics("val")
        # Metrics are torchmetrics objects, so DDP ranks pool their states before computing.
        self.val_malignant_auroc = None if self.binary else BinaryAUROC()

    def _metrics(self, prefix: str) -> MetricCollection:
        n = len(self.hparams.class_names)
        if self.binary:
            return MetricCollection({"auroc": BinaryAUROC()}, prefix=f"{prefix}/")
        return MetricCollection(
            {
                "bal_acc": MulticlassAccuracy(n, average="macro"),
                "acc": MulticlassAccuracy(n, average="micro"),
                "auroc": MulticlassAUROC(n, average="macro"),
            },
            prefix=f"{prefix}/",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of uint8 (or 0-255 float) NCHW images at the input size."""
        x = (x.float() - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def p_malignant(self, probs: torch.Tensor) -> torch.Tensor:
        """Malignant probability: the binary model's own, or mel+bcc+akiec of the multiclass one,
        reweighted by ``malignant_prior`` when given (see :func:`skinlesion.malignant_probability`)."""
        if self.malignant_prior is not None:
            probs = probs * self.malignant_prior
            probs = probs / probs.sum(dim=1, keepdim=True)
        if self.binary:
            return probs[:, 1]
        return probs[:, self.is_malignant].sum(dim=1)

    def _loss(self, logits, y):
        logits = logits.float()
        weight = self.hparams.malignant_loss_weight
        extra = weight * self._malignant_loss(logits, y) if weight else 0.0
        if self.log_prior is not None:
            # Logit-adjusted loss (Menon et al., ICLR 2021): the softmax of the unadjusted logits
            # then estimates class probabilities under a uniform prior, which suits balanced accuracy.
            logits = logits + self.log_prior
        kwargs = {"weight": self.class_weights, "label_smoothing": self.hparams.label_smoothing}
        if self.hparams.loss == "focal":
            return focal_loss(logits, y, gamma=self.hparams.focal_gamma, **kwargs) + extra
        return F.cross_entropy(logits, y, **kwargs) + extra

    def _malignant_loss(self, logits, y):
        """Binary cross-entropy of malignant vs benign on the log-odds of :meth:`p_malignant`.

        ``y`` holds class indices or, after MixUp/CutMix, class probabilities (the malignant
        target is then the mixed malignant share)."""
        if self.malignant_prior is not None:
            logits = logits + self.malignant_prior.log()
        malignant = self.is_malignant
        log_odds = logits[:, malignant].logsumexp(1) - logits[:, ~malignant].logsumexp(1)
        target = y[:, malignant].sum(1) if y.is_floating_point() else malignant[y].float()
        return F.binary_cross_entropy_with_logits(log_odds, target)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.mix is not None:
            x, y = self.mix(x.float(), y)
        loss = self._loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x).float()
        self.log("val/loss", self._loss(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        probs = torch.softmax(logits, dim=1)
        self.val_metrics.update(probs[:, 1] if self.binary else probs, y)
        if not self.binary:
            self.val_malignant_auroc.update(self.p_malignant(probs), self.is_malignant[y].long())

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()
        if not self.binary:
            self.log("val/malignant_auroc", self.val_malignant_auroc.compute(), prog_bar=True)
            self.val_malignant_auroc.reset()

    def configure_optimizers(self):
        """AdamW with a linear warm-up and a cosine decay, stepped every batch."""
        decay, no_decay = [], []
        for name, param in self.net.named_parameters():
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(total - 1, int(total * self.hparams.warmup_epochs / max(1, self.hparams.epochs)))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto``: the GPU when there is one, else the CPU; ``cpu`` or ``cuda`` as they are."""
    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_classifier(path, map_location="cpu") -> LesionClassifier:
    """Load a checkpoint for inference (weights only: no pickled code is executed) onto
    ``map_location`` (a device, or ``auto``: :func:`resolve_device`)."""
    if map_location in DEVICES:
        map_location = resolve_device(map_location)
    # The trained weights replace any initial ones: build the network without reading pretrained weights.
    kwargs = {"map_location": map_location, "init_weights": False}
    model = LesionClassifier.load_from_checkpoint(path, weights_only=True, **kwargs)
    return model.eval()
