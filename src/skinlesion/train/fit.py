"""The train rule: one tier, seeded, tracked in MLflow (:mod:`skinlesion.train.tracking`), resumable after a kill.

Everything that must survive a killed job lives in a work directory that is *not* a Snakemake
output (Snakemake deletes the outputs of an incomplete job before rerunning it): ``last.ckpt``,
the per-epoch history so far, the MLflow run id and a fingerprint of the configuration. A
rerun with the same fingerprint resumes from ``last.ckpt``; a changed configuration starts over.
The callbacks live in :mod:`skinlesion.train.callbacks`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from skinlesion.io import atomic_path, md5sum
from skinlesion.train import tracking
from skinlesion.train.callbacks import StepTimer, training_callbacks
from skinlesion.train.datamodule import LesionDataModule, class_names
from skinlesion.train.module import LesionClassifier

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 mixed precision on a GPU (fp16 mixed, ``16-mixed``, on a GPU without bf16 support)
    or on a CPU where oneDNN runs bf16: natively (AMX/AVX512-BF16) or emulated (other AVX-512
    CPUs); else (AVX2 only) fp32."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def augment_on_device(settings: dict) -> bool:
    """``augment.on_device``: ``auto`` augments on the training device when that is a GPU, in the
    DataLoader workers on a CPU. The device path measured faster on the CPU too (docs/benchmarks.md),
    but switching changes the random crops and has not been cross-validated, so the CPU keeps the
    worker path."""
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


def _prepare_work(work: Path, fingerprint: str, rank_zero: bool) -> bool:
    """Whether to resume from ``work/last.ckpt``: there is one, written with the same ``fingerprint``.
    Otherwise rank 0 empties the work folder; it records the fingerprint either way."""
    fp_file = work / "fingerprint"
    resume = (work / "last.ckpt").exists() and fp_file.exists() and fp_file.read_text() == fingerprint
    if rank_zero:
        if not resume and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        fp_file.write_text(fingerprint)
    return resume


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
    model = LesionClassifier.from_settings(
        tier,
        settings,
        class_names=class_names(settings["task"]),
        mean=dm.mean,
        std=dm.std,
        cache_size=int(np.load(images, mmap_mode="r").shape[1]),
        class_weights=class_weights,
        class_prior=class_prior,
        malignant_prior=malignant_prior,
    )
    return dm, model


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


def _trainer(settings: dict, precision: str, callbacks: list, logger, work: Path, progress: bool) -> L.Trainer:
    """The train rule's deterministic Trainer (DDP on more than one device)."""
    devices = settings["devices"]
    return L.Trainer(
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
    # With DDP, Lightning starts ranks 1..N-1 by rerunning this job's script; only rank 0 manages
    # the work folder and the MLflow run.
    rank_zero = rank_zero_only.rank == 0
    resume = _prepare_work(work, _fingerprint(settings, seed, [index, split, stats]), rank_zero)
    last = work / "last.ckpt"
    callbacks, checkpoint, history = training_callbacks(settings, seed, work)
    logger, run_id = tracking.start_run(mlflow_cfg, tier, work) if rank_zero and mlflow_cfg else (False, None)
    precision = resolve_precision(settings["precision"], settings["accelerator"])
    trainer = _trainer(settings, precision, callbacks, logger, work, progress)
    if resume:
        done = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
        log.info("resuming %s from %s (epoch %d done)", tier, last, done)
        history.truncate(done)
    else:
        log.info("training %s from its initial weights (precision %s)", tier, precision)
    if logger:
        tracking.log_settings(logger, settings, tier=tier, seed=seed, precision=precision)
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
        tracking.finish_run(logger, mlflow_cfg, tier, out_ckpt, out_history, provenance or {})
    if out_run_id:
        with atomic_path(out_run_id) as tmp:
            tmp.write_text(run_id + "\n")
    best_score = checkpoint.best_model_score
    return {"best": float(best_score) if best_score is not None else None, "run_id": run_id}
