"""The train rule: one tier, seeded, tracked in MLflow, resumable after a kill.

Everything that must survive a killed job lives in a work directory that is *not* a Snakemake
output (Snakemake deletes the outputs of an incomplete job before rerunning it): ``last.ckpt``,
the per-epoch history so far, the MLflow run id and a fingerprint of the configuration. A
rerun with the same fingerprint resumes from ``last.ckpt``; a changed configuration starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities import rank_zero_only

from skinlesion.io import atomic_path, md5sum
from skinlesion.train.datamodule import LesionDataModule, class_names, epoch_seed
from skinlesion.train.module import LesionClassifier

log = logging.getLogger(__name__)
# No MLflow upload progress bars in the rule logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 mixed precision on a GPU, or on a CPU with native bf16 (AMX/AVX512-BF16); else fp32."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def ema_decay(decay: float, n: float) -> float:
    """The EMA decay after ``n`` updates: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + n) / (10 + n))


def ema_update(decay: float):
    """The EMA step for ``AveragedModel(multi_avg_fn=...)``: the decay warms up (:func:`ema_decay`),
    so the random initial weights do not dominate the average of
    a short run. One fused ``_foreach_lerp_`` per step: about 4x faster than updating tensor by tensor
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


def time_training_steps(dm, model, settings: dict, batches: int) -> StepTimer:
    """Train one epoch of ``batches`` batches (no validation, logging or checkpoints); return its step times."""
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=settings["accelerator"],
        devices=1,
        precision=resolve_precision(settings["precision"], settings["accelerator"]),
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer


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


def augment_on_device(settings: dict) -> bool:
    """``augment.on_device``: ``auto`` augments on the training device when that is a GPU, in the
    DataLoader workers on a CPU (which measured faster there: docs/benchmarks.md)."""
    choice = settings["augment"].get("on_device", "auto")
    if choice == "auto":
        return settings["accelerator"] in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return bool(choice)


def resolve_workers(num_workers: int | str) -> int:
    """``auto``: one DataLoader worker per thread of the job (torch's thread count, which the rule
    script sets from the job's threads) but one, at least one; else the number as it is."""
    return max(1, torch.get_num_threads() - 1) if num_workers == "auto" else int(num_workers)


def _fingerprint(settings: dict, seed: int, inputs: list[str]) -> str:
    blob = json.dumps({"settings": settings, "seed": seed, "inputs": [md5sum(p) for p in inputs]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build(tier: str, settings: dict, *, images, index, split, stats, seed: int = 0):
    """The DataModule and the LightningModule of one tier, from its resolved settings."""
    dm = LesionDataModule(
        images,
        index,
        split,
        stats,
        task=settings["task"],
        image_size=settings["image_size"],
        batch_size=settings["batch_size"],
        num_workers=resolve_workers(settings["num_workers"]),
        imbalance=settings["imbalance"],
        augment=settings["augment"],
        on_device=augment_on_device(settings),
        seed=seed,
    )
    counts = np.maximum(dm.class_counts(), 1)
    class_weights = class_prior = None
    # Every remedy but none makes the network's probabilities assume equally frequent classes (of
    # either task); the training frequencies turn them back into population probabilities.
    balanced = settings["imbalance"] != "none"
    malignant_prior = (counts / counts.sum()).tolist() if balanced else None
    if settings["imbalance"] == "weighted_loss":
        class_weights = (counts.sum() / (len(counts) * counts)).tolist()
    elif settings["imbalance"] == "logit_adjust":
        class_prior = (counts / counts.sum()).tolist()
    model = LesionClassifier(
        tier=tier,
        model=settings["model"],
        class_names=class_names(settings["task"]),
        mean=dm.mean,
        std=dm.std,
        image_size=settings["image_size"],
        cache_size=int(np.load(images, mmap_mode="r").shape[1]),
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        warmup_epochs=settings["warmup_epochs"],
        epochs=settings["epochs"],
        loss=settings["loss"],
        focal_gamma=settings["focal_gamma"],
        label_smoothing=settings["label_smoothing"],
        mixup_alpha=settings["mixup_alpha"],
        cutmix_alpha=settings["cutmix_alpha"],
        class_weights=class_weights,
        class_prior=class_prior,
        malignant_prior=malignant_prior,
        malignant_loss_weight=settings["malignant_loss_weight"],
    )
    return dm, model


def train_tier(
    tier: str,
    *,
    images: str,
    index: str,
    split: str,
    stats: str,
    settings: dict,
    seed: int,
    out_ckpt: str,
    out_history: str,
    out_run_id: str | None,
    work_dir: str,
    mlflow_cfg: dict | None,
    progress: bool = False,
    provenance: dict | None = None,
) -> dict:
    """Train one tier with its resolved ``settings`` (see :func:`skinlesion.config.tier_settings`) and write its
    best checkpoint, per-epoch history and MLflow run id (``mlflow_cfg`` None: no tracking, as for
    the cross-validation folds of model selection)."""
    L.seed_everything(seed, workers=True)
    # First, so that a split table the protocol refuses (skinlesion.tables) leaves nothing behind.
    dm, model = build(tier, settings, images=images, index=index, split=split, stats=stats, seed=seed)
    work = Path(work_dir)
    fingerprint = _fingerprint(settings, seed, [index, split, stats])
    fp_file, last = work / "fingerprint", work / "last.ckpt"
    resume = last.exists() and fp_file.exists() and fp_file.read_text() == fingerprint
    # With DDP, Lightning starts ranks 1..N-1 by rerunning this job's script; only rank 0 manages
    # the work folder and the MLflow run.
    rank_zero = rank_zero_only.rank == 0
    if rank_zero:
        if not resume and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        fp_file.write_text(fingerprint)

    monitor = settings["monitor"]
    history = EpochHistory(work / "history.csv")
    # Saved at the end of each training epoch, after EpochHistory has written that epoch's row
    # (Lightning runs checkpoint callbacks last), so a kill never leaves last.ckpt ahead of the history.
    checkpoint = ModelCheckpoint(
        dirpath=work, filename="best", monitor=monitor, mode="max", save_last=True, save_on_train_epoch_end=True
    )
    callbacks = [EpochSeed(seed), checkpoint]
    if settings["ema_decay"]:
        # Validation, checkpoints (best.ckpt's state_dict) and the final model use the averaged weights.
        # Before the history, so that the EMA update counts as step time, not as data wait.
        callbacks.append(EMA(settings["ema_decay"]))
    callbacks.append(history)
    if settings["early_stopping_patience"]:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=settings["early_stopping_patience"]))

    logger, run_id = _mlflow_logger(mlflow_cfg, tier, work) if rank_zero and mlflow_cfg else (False, None)
    precision = resolve_precision(settings["precision"], settings["accelerator"])
    devices = settings["devices"]
    trainer = L.Trainer(
        accelerator=settings["accelerator"],
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        max_epochs=settings["epochs"],
        deterministic=True,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=work,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        limit_train_batches=settings.get("limit_train_batches"),
    )
    if resume:
        done = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
        log.info("resuming %s from %s (epoch %d done)", tier, last, done)
        history.truncate(done)
    else:
        log.info("training %s from its initial weights (precision %s)", tier, precision)
    if logger:
        logger.log_hyperparams({"tier": tier, "seed": seed, "precision": precision, **_flatten(settings)})
    trainer.fit(model, datamodule=dm, ckpt_path=str(last) if resume else None)

    if trainer.global_rank != 0:
        return {}
    log.info("%s trained in %d process(es), strategy %s", tier, trainer.world_size, type(trainer.strategy).__name__)
    best = Path(checkpoint.best_model_path or last)
    with atomic_path(out_ckpt) as tmp:
        shutil.copyfile(best, tmp)
    with atomic_path(out_history) as tmp:
        shutil.copyfile(history.path, tmp)
    if logger:
        with store_lock(mlflow_cfg):
            _finish_mlflow(logger, mlflow_cfg, tier, out_ckpt, out_history, provenance or {})
    if out_run_id:
        with atomic_path(out_run_id) as tmp:
            tmp.write_text(run_id + "\n")
    best_score = checkpoint.best_model_score
    return {"best": float(best_score) if best_score is not None else None, "run_id": run_id}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@contextlib.contextmanager
def store_lock(mlflow_cfg: dict):
    """Serialise set-up and registration on a local sqlite store, which train jobs running in parallel
    (on a cluster) would otherwise race to create and migrate."""
    uri = tracking_uri(mlflow_cfg)
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    with FileLock(uri.removeprefix("sqlite:///") + ".lock"):
        yield


def _mlflow_logger(mlflow_cfg: dict, tier: str, work: Path):
    """An MLflow logger that reuses the run of an interrupted attempt."""
    from lightning.pytorch.loggers import MLFlowLogger

    run_file = work / "mlflow_run_id"
    with store_lock(mlflow_cfg):
        logger = MLFlowLogger(
            experiment_name=mlflow_cfg["experiment"],
            tracking_uri=tracking_uri(mlflow_cfg),
            run_name=tier,
            run_id=run_file.read_text().strip() if run_file.exists() else None,
            artifact_location=Path(mlflow_cfg["artifact_dir"]).resolve().as_uri(),
        )
        run_id = logger.run_id
    run_file.write_text(run_id)
    return logger, run_id


def tracking_uri(mlflow_cfg: dict) -> str:
    uri = mlflow_cfg["tracking_uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    return uri


def _finish_mlflow(logger, mlflow_cfg: dict, tier: str, ckpt: str, history: str, provenance: dict) -> None:
    """Attach provenance, checkpoint and history to the run; register the checkpoint as a model version."""
    client, run_id = logger.experiment, logger.run_id
    for key in ("git_commit", "config_sha256", "seed"):
        if key in provenance:
            client.set_tag(run_id, key, str(provenance[key]))
    if provenance:
        client.log_dict(run_id, provenance, "provenance.json")
    client.log_artifact(run_id, ckpt, "checkpoint")
    client.log_artifact(run_id, history, "history")
    if mlflow_cfg["register"]:
        from mlflow.exceptions import MlflowException

        name = f"{mlflow_cfg['experiment']}-{tier}"
        with contextlib.suppress(MlflowException):  # already registered by an earlier run
            client.create_registered_model(name)
        source = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
        client.create_model_version(name, source=source, run_id=run_id)
    client.set_terminated(run_id, "FINISHED")
