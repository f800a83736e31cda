"""Training data: the memory-mapped uint8 cache, augmentation, and the DataModule.

Augmentation takes one of two paths (``augment.on_device``):

- in the DataLoader workers (the CPU default): the geometric part (torchvision transforms v2) per
  image, then colour jitter (kornia, random strengths per image) on the whole batch in the main
  process. Colour jitter image by image in the worker kept it busy and slowed training on two
  cores; on the whole batch it costs far less per image;
- on the training device (the GPU default): the workers only read cached uint8 frames, and the
  whole augmentation (random resized crop, flips, 90-degree rotations, affine, colour jitter) runs
  on each batch where the model trains (kornia), with its own draws for every image. Small
  networks on a GPU otherwise wait for the CPU workers.

Either way the draws come from the per-epoch seeds (:class:`EpochSampler`, and the global random
state that :class:`skinlesion.train.callbacks.EpochSeed` sets), so CPU reruns are byte-identical.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from skinlesion import CLASSES
from skinlesion.tables import labels_for, load_development_table


def class_names(task: str) -> list[str]:
    """Output classes of a model trained for ``task``."""
    return list(CLASSES) if task == "multiclass" else ["benign", "malignant"]


def _rot90(img: torch.Tensor) -> torch.Tensor:
    return torch.rot90(img, int(torch.randint(4, (1,))), dims=(-2, -1))


def train_transform(size: int, augment: dict) -> v2.Transform:
    """Random geometric augmentation of a uint8 CHW image, ending at ``size`` x ``size``."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=(augment["crop_scale_min"], 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
    ]
    if augment["flip"]:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment["rot90"]:
        steps.append(v2.Lambda(_rot90))
    if augment["degrees"] or augment["translate"]:
        translate = (augment["translate"],) * 2 if augment["translate"] else None
        steps.append(v2.RandomAffine(degrees=augment["degrees"], translate=translate))
    return v2.Compose(steps)


class BatchAugment(torch.nn.Module):
    """kornia augmentations applied to a 0-255 NCHW batch (uint8 or float), each image with its own
    random draws; returns 0-255 floats."""

    def __init__(self, *steps: torch.nn.Module):
        super().__init__()
        self.steps = torch.nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.steps(x.float() / 255) * 255


def _color_jitter(augment: dict) -> list[torch.nn.Module]:
    from kornia.augmentation import ColorJitter

    jitter = augment["color_jitter"]
    return [ColorJitter(**jitter, p=1.0)] if any(jitter.values()) else []


def color_transform(augment: dict) -> BatchAugment | None:
    """The batched colour part of the worker path's augmentation, or None where it is switched off."""
    steps = _color_jitter(augment)
    return BatchAugment(*steps) if steps else None


def device_transform(size: int, augment: dict) -> BatchAugment:
    """The whole training augmentation of the device path: the worker path's steps (:func:`train_transform`
    and the colour jitter) as kornia modules on a batch of cached frames, ending at ``size``."""
    import kornia.augmentation as K

    steps = [K.RandomResizedCrop((size, size), scale=(augment["crop_scale_min"], 1.0), ratio=(3 / 4, 4 / 3))]
    if augment["flip"]:
        steps += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
    if augment["rot90"]:
        steps.append(K.RandomRotation90(times=(0, 3), p=1.0))
    if augment["degrees"] or augment["translate"]:
        translate = (augment["translate"],) * 2 if augment["translate"] else None
        steps.append(K.RandomAffine(degrees=augment["degrees"], translate=translate, p=1.0))
    return BatchAugment(*steps, *_color_jitter(augment))


def eval_transform(size: int) -> v2.Transform:
    """The deterministic counterpart: the whole (square) cached frame resized to ``size``."""
    return v2.Resize((size, size), antialias=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one training epoch: a function of the run's seed and the epoch number alone."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochSampler(Sampler):
    """The training draws of one epoch, from (seed, epoch) alone: ``n`` indices (a permutation, or
    with ``weights`` drawn with replacement in proportion to them, e.g. class-balanced), each paired
    with a seed for its augmentation (:class:`CacheDataset`).

    Nothing carries over from one epoch to the next, so a training resumed at epoch k sees exactly
    the samples and augmentations an uninterrupted one sees, whatever the number of workers, provided
    the pass is drawn once the fit loop knows its epoch (:class:`FirstBatchLoader`).
    ``epoch`` (a callable) names the epoch as each pass starts: in training, the fit loop's own count
    (:meth:`LesionDataModule.next_epoch`), which is right whether or not Lightning has called
    :meth:`set_epoch` by then, and where it never calls it on this sampler (wrapped for DDP). Without
    it, :meth:`set_epoch` names the epoch and each pass moves on to the next.
    """

    def __init__(
        self, n: int, weights: np.ndarray | None = None, *, seed: int = 0, epoch: Callable[[], int] | None = None
    ):
        self.n, self.seed, self.epoch, self.epoch_of = n, seed, 0, epoch
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch = self.epoch if self.epoch_of is None else self.epoch_of()
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        self.epoch = epoch + 1
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        draw_seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=g)
        return iter(list(zip(order.tolist(), draw_seeds.tolist(), strict=True)))


class _FirstBatchIterator:
    """The iterator of a :class:`FirstBatchLoader`: makes the DataLoader's own at the first ``next``."""

    def __init__(self, start: Callable[[], object]):
        self._start, self._iterator = start, None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)


class FirstBatchLoader(DataLoader):
    """A DataLoader whose pass starts when its first batch is asked for, not when ``iter()`` is called.

    With workers, the DataLoader's own iterator hands the sampler's first batches to them as it is
    made, so the sampler draws the pass (and :class:`EpochSampler` reads the fit loop's epoch) then.
    Lightning makes the training iterator as it sets the loader up, and where ``configure_optimizers``
    reads ``trainer.estimated_stepping_batches`` (as :class:`~skinlesion.train.module.LesionClassifier`'s
    does), that is before it restores the loops from the checkpoint: a fit resumed after epoch k drew
    epoch 0's samples and augmentation seeds for its first epoch. The first batch is asked for in the
    epoch loop, after the restore and after ``on_train_epoch_start``. (Without workers the DataLoader's
    own iterator is already lazy, the reason a resumed run without workers matched all along.)
    """

    def __iter__(self):
        return _FirstBatchIterator(super().__iter__)


class CacheDataset(Dataset):
    """Rows of the uint8 image cache with their labels; opens the memmap lazily in each worker.

    An item is a position or, from :class:`EpochSampler`, a (position, seed) pair: the random
    transform then draws from that seed alone, not from the worker's random state."""

    def __init__(self, images_npy: str | os.PathLike, rows: np.ndarray, labels: np.ndarray, transform=None):
        self.images_npy = str(images_npy)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform
        self._images = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int | tuple[int, int]):
        i, draw_seed = item if isinstance(item, tuple) else (item, None)
        if self._images is None:
            self._images = np.load(self.images_npy, mmap_mode="r")
        img = torch.from_numpy(np.array(self._images[self.rows[i]])).permute(2, 0, 1)
        if self.transform is not None:
            if draw_seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(draw_seed)
                    img = self.transform(img)
        return img, self.labels[i]


class LesionDataModule(L.LightningDataModule):
    """Train and val loaders over the preprocessed cache and a development split table (train and val
    rows only: :func:`skinlesion.tables.load_development_table` refuses test rows)."""

    def __init__(
        self,
        images_npy: str,
        index_csv: str,
        split_csv: str,
        stats_json: str,
        *,
        task: str = "multiclass",
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 1,
        imbalance: str = "sampler",
        augment: dict,
        on_device: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.images_npy, self.task, self.image_size = images_npy, task, image_size
        self.batch_size, self.num_workers, self.imbalance, self.seed = batch_size, num_workers, imbalance, seed
        self.table = load_development_table(index_csv, split_csv)
        self.labels = labels_for(self.table, task)
        stats = json.loads(Path(stats_json).read_text())
        self.mean, self.std = stats["mean"], stats["std"]
        self.augment, self.on_device = augment, on_device
        # What runs on each training batch after its transfer: all of the augmentation, or its colour part.
        self.batch_augment = device_transform(image_size, augment) if on_device else color_transform(augment)
        self.jitter_seconds = 0.0  # time spent on the batched augmentation so far (for the timing callbacks)
        self.num_classes = len(class_names(task))

    def _rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def class_counts(self) -> np.ndarray:
        train = self.labels[self._rows("train")]
        return np.bincount(train, minlength=self.num_classes)

    def dataset(self, split: str, train: bool = False) -> CacheDataset:
        rows = self._rows(split)
        if train:
            transform = None if self.on_device else train_transform(self.image_size, self.augment)
        else:
            transform = eval_transform(self.image_size)
        return CacheDataset(self.images_npy, self.table["row"].to_numpy()[rows], self.labels[rows], transform)

    def _loader(self, dataset, loader: type[DataLoader] = DataLoader, **kwargs) -> DataLoader:
        return loader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Seeded per epoch (:class:`EpochSampler`): class-balanced draws with ``imbalance: sampler``,
        else a permutation, each pass drawn at its first batch (:class:`FirstBatchLoader`). The loader's
        own generator keeps its worker seeds off the global RNG."""
        data = self.dataset("train", train=True)
        weights = 1.0 / self.class_counts()[data.labels.numpy()] if self.imbalance == "sampler" else None
        sampler = EpochSampler(len(data), weights, seed=self.seed, epoch=self.next_epoch if self.trainer else None)
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(data, FirstBatchLoader, sampler=sampler, generator=generator, drop_last=True)

    def next_epoch(self) -> int:
        """The epoch the fit loop runs next, from its progress (restored from the checkpoint in a resumed
        fit by the time the first pass is drawn: :class:`FirstBatchLoader`)."""
        return self.trainer.fit_loop.epoch_progress.current.processed

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches on the training device (all of it, or the colour jitter); evaluation
        batches stay as they are."""
        if self.batch_augment is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            start = time.perf_counter()
            x = self.batch_augment(x)
            self.jitter_seconds += time.perf_counter() - start
            return x, y
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))
