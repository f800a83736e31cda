"""The train rule's Lightning callbacks: the EMA of the weights, per-epoch seeding, step timing and
the per-epoch history that a resumed run keeps."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging

from skinlesion.io import atomic_path
from skinlesion.train.datamodule import epoch_seed


def ema_decay(decay: float, n: float) -> float:
    """The EMA decay after ``n`` updates: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + n) / (10 + n))


def ema_update(decay: float):
    """The EMA step for ``AveragedModel(multi_avg_fn=...)``: the decay warms up (:func:`ema_decay`),
    so the random initial weights do not dominate the average of
    a short run. One fused ``_foreach_lerp_`` per step: faster than updating tensor by tensor
    (``benchmarks/ema_update.py``)."""

    @torch.no_grad()
    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # BatchNorm's num_batches_tracked: keep the count
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1 - ema_decay(decay, float(n)))

    return ema


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and BatchNorm buffers), updated every step
    (:func:`ema_update`)."""

    def __init__(self, decay: float):
        super().__init__(multi_avg_fn=ema_update(decay))


class EpochSeed(Callback):
    """Reseed the global random state from (seed, epoch) as each training epoch starts, so what draws
    from it during the epoch (MixUp/CutMix, colour jitter, dropout) does not depend on earlier
    epochs: a training killed after epoch k and resumed from its checkpoint continues exactly as an
    uninterrupted one. The samples and their augmentation are seeded per epoch by the sampler."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        L.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)


def jitter_seconds(trainer) -> float:
    """Time the datamodule has spent on the batched augmentation (the colour jitter, or all of it on the
    device path), which runs between two steps."""
    return getattr(trainer.datamodule, "jitter_seconds", 0.0)


class StepTimer(Callback):
    """Per training step of the current epoch: the wait for the DataLoader, the batched augmentation
    (which runs between two steps) and the step itself, in seconds."""

    def on_train_epoch_start(self, trainer, pl_module):
        self.wait, self.jitter, self.busy = [], [], []
        self._epoch_start = self._mark = time.perf_counter()
        self._jitter_mark = jitter_seconds(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now, jitter = time.perf_counter(), jitter_seconds(trainer)
        self.jitter.append(jitter - self._jitter_mark)
        self.wait.append(now - self._mark - self.jitter[-1])
        self._mark, self._jitter_mark = now, jitter

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.busy.append(now - self._mark)
        self._mark = now


class EpochHistory(StepTimer):
    """Per-epoch metrics, epoch time and the share of step time spent waiting for the DataLoader.

    Rows are appended to ``path`` as each epoch ends, so a resumed run keeps earlier epochs.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        wait, total = sum(self.wait), sum(self.wait) + sum(self.jitter) + sum(self.busy)
        pl_module.log("time/data_wait_frac", wait / total if total else 0.0)
        pl_module.log("time/train_epoch_s", time.perf_counter() - self._epoch_start)
        if trainer.global_rank != 0:
            return
        row = {"epoch": trainer.current_epoch}
        row.update({k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items())})
        rows = self.rows() + [row]
        with atomic_path(self.path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")

    def rows(self) -> list[dict]:
        return pd.read_csv(self.path).to_dict("records") if self.path.exists() else []

    def truncate(self, epochs_done: int) -> None:
        """Drop rows of epochs at or after ``epochs_done`` (they are about to be rerun)."""
        rows = [r for r in self.rows() if r["epoch"] < epochs_done]
        with atomic_path(self.path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")


def training_callbacks(settings: dict, seed: int, work: Path) -> tuple[list[Callback], ModelCheckpoint, EpochHistory]:
    """The train rule's callbacks in their order, and the two whose results it reads afterwards: the
    checkpoint (best and last, in ``work``) and the history (``work/history.csv``)."""
    monitor = settings["monitor"]
    history = EpochHistory(work / "history.csv")
    # best.ckpt: the best epoch by the monitor. last.ckpt: every epoch (ModelCheckpoint's own save_last
    # follows only a top-k save, i.e. an improvement). Both at the end of the training epoch, after
    # EpochHistory has written that epoch's row (Lightning runs checkpoint callbacks last), so a kill
    # never leaves last.ckpt ahead of the history.
    checkpoint = ModelCheckpoint(
        dirpath=work, filename="best", monitor=monitor, mode="max", save_on_train_epoch_end=True
    )
    last = ModelCheckpoint(
        dirpath=work,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [EpochSeed(seed), checkpoint, last]
    if settings["ema_decay"]:
        # Validation, checkpoints (best.ckpt's state_dict) and the final model use the averaged weights.
        # Before the history, so that the EMA update counts as step time, not as data wait.
        callbacks.append(EMA(settings["ema_decay"]))
    callbacks.append(history)
    if settings["early_stopping_patience"]:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=settings["early_stopping_patience"]))
    return callbacks, checkpoint, history
