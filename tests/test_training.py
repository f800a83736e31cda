"""The train rule as Snakemake runs it: MLflow tracking, and resuming a killed job."""

import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import ROOT, SNAKEMAKE, run_snakemake, sample_args
from skinlesion.config import load_config, tier_settings
from skinlesion.serve.export import weights_sha256
from skinlesion.train.datamodule import LesionDataModule
from skinlesion.train.fit import build, time_training_steps
from skinlesion.train.module import load_classifier

TIERS = ("baseline_cnn", "resnet", "transfer")


def test_mlflow_holds_each_run_with_params_metrics_and_artifacts(sample_run):
    results = sample_run / "results"
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    for tier in TIERS:
        run_id = (results / "models" / tier / "mlflow_run_id.txt").read_text().strip()
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["tier"] == tier and run.data.params["epochs"] == "2"
        assert "model.dropout" in run.data.params and run.data.params["imbalance"] == "sampler"
        history = client.get_metric_history(run_id, "val/bal_acc")
        assert len(history) == 2
        csv = pd.read_csv(results / "models" / tier / "history.csv")
        assert [round(m.value, 6) for m in sorted(history, key=lambda m: m.step)] == list(csv["val/bal_acc"])
        artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
        assert artifacts == {"checkpoint/best.ckpt"}
        assert {a.path for a in client.list_artifacts(run_id, "history")} == {"history/history.csv"}
        versions = client.search_model_versions(f"name='skinlesion-{tier}'")
        assert any(v.run_id == run_id for v in versions)


def test_colour_jitter_differs_per_image_and_spares_evaluation_batches(sample_run):
    data = sample_run / "results" / "data"
    settings = tier_settings(load_config()["train"], "baseline_cnn")
    dm = LesionDataModule(
        *(str(data / f) for f in ("images.npy", "index.csv", "development.csv", "norm_stats.json")),
        image_size=settings["image_size"],
        augment=settings["augment"],
        num_workers=0,
    )
    image = dm.dataset("val")[0][0]
    batch = (image.expand(8, -1, -1, -1).clone(), torch.zeros(8, dtype=torch.long))
    dm.trainer = type("Trainer", (), {"training": False})()
    assert dm.on_after_batch_transfer(batch, 0)[0] is batch[0]
    dm.trainer.training = True
    torch.manual_seed(0)
    jittered = dm.on_after_batch_transfer(batch, 0)[0]
    assert jittered.shape == batch[0].shape and jittered.min() >= 0 and jittered.max() <= 255
    # Eight copies of one image come out as eight different images.
    assert len({tuple(x.flatten()[:64].tolist()) for x in jittered.round()}) == 8


def test_device_augmentation_draws_per_image_from_the_seed_and_reruns_identically(sample_run):
    """augment.on_device: the workers hand over whole cached frames and the batch is augmented where the
    model trains: every image of the batch gets its own crop, flips, rotation and colours, the same
    seed gives the same batch, another seed another."""
    data = sample_run / "results" / "data"
    settings = tier_settings(load_config()["train"], "baseline_cnn")
    files = (str(data / f) for f in ("images.npy", "index.csv", "development.csv", "norm_stats.json"))
    dm = LesionDataModule(*files, image_size=32, augment=settings["augment"], on_device=True, num_workers=0)
    frame = dm.dataset("train", train=True)[0][0]
    assert frame.dtype == torch.uint8 and frame.shape[-1] == int(np.load(data / "images.npy", mmap_mode="r").shape[1])
    batch = (frame.expand(8, -1, -1, -1).clone(), torch.zeros(8, dtype=torch.long))
    dm.trainer = type("Trainer", (), {"training": True})()

    def augmented(seed):
        torch.manual_seed(seed)
        return dm.on_after_batch_transfer(batch, 0)[0]

    first = augmented(0)
    assert first.shape == (8, 3, 32, 32) and first.min() >= 0 and first.max() <= 255
    assert len({tuple(x.flatten()[:256].round().tolist()) for x in first}) == 8
    assert torch.equal(first, augmented(0)) and not torch.equal(first, augmented(1))


def test_step_timer_counts_the_batched_jitter_as_work_not_as_data_wait(sample_run):
    """``time/data_wait_frac`` (and the throughput benchmark) must blame the DataLoader only."""
    data = sample_run / "results" / "data"
    settings = {**tier_settings(load_config()["train"], "baseline_cnn"), "num_workers": 0, "batch_size": 8}
    files = {"images": "images.npy", "index": "index.csv", "split": "development.csv", "stats": "norm_stats.json"}
    dm, model = build("baseline_cnn", settings, **{name: str(data / f) for name, f in files.items()})
    jitter = dm.batch_augment

    def slow_jitter(x):
        time.sleep(0.2)
        return jitter(x)

    dm.batch_augment = slow_jitter
    timer = time_training_steps(dm, model, {**settings, "accelerator": "cpu"}, batches=4)
    assert len(timer.jitter) == len(timer.wait) == len(timer.busy) == 4
    assert min(timer.jitter) >= 0.2 and sum(timer.jitter) == pytest.approx(dm.jitter_seconds)
    # Were the jitter booked as data wait, every step would wait >= 0.2 s. The first step's wait is left out:
    # it also holds the DataLoader's start (iterator, cold page cache), which took 0.65 s once on a busy CI machine.
    assert max(timer.wait[1:]) < 0.2


def test_checkpoints_hold_the_averaged_weights(sample_run):
    ckpt = torch.load(sample_run / "results/models/baseline_cnn/work/last.ckpt", map_location="cpu", weights_only=False)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == current.keys()
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged if averaged[k].is_floating_point())


def test_killed_training_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    """Kill a real training run mid-way; Snakemake's rerun continues from last.ckpt, not from scratch,
    and ends with the same weights and history as the same training never interrupted. In the default
    configuration: a DataLoader worker (persistent), MixUp, EMA of the weights and colour jitter."""
    epochs = 12  # enough to kill after three epochs with most of the run still ahead
    cfg = tmp_path / "longer.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "train": {
                    "num_workers": 1,
                    "resnet": {
                        "epochs": epochs,
                        "image_size": 48,
                        "mixup_alpha": 0.2,
                        "ema_decay": 0.998,
                        "model": {"widths": [16, 32, 64], "blocks_per_stage": [1, 1, 1]},
                    },
                }
            }
        )
    )
    target = "results/models/resnet/best.ckpt"
    run_snakemake(tmp_path, *sample_args("--", "results/data/norm_stats.json"))
    args = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2"]
    args += [*sample_args("--", target, configfiles=(cfg,))]
    work = tmp_path / "results" / "models" / "resnet" / "work"
    proc = subprocess.Popen(
        args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 900  # three epochs; generous for a busy two-core machine
        while time.monotonic() < deadline:
            history = work / "history.csv"
            if (work / "last.ckpt").exists() and history.exists() and len(pd.read_csv(history)) >= 3:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        else:
            raise AssertionError("no checkpoint within 900 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(pd.read_csv(work / "history.csv"))
    run_id = (work / "mlflow_run_id").read_text()
    assert not (tmp_path / target).exists() and done_before < epochs

    # As after any killed run: release Snakemake's lock, then rerun the incomplete job.
    run_snakemake(tmp_path, "--unlock", *sample_args(configfiles=(cfg,)))
    run_snakemake(tmp_path, *sample_args("--rerun-incomplete", "--", target, configfiles=(cfg,)))
    log = (tmp_path / "results" / "logs" / "train" / "resnet.log").read_text()
    assert "resuming resnet from" in log and "from scratch" not in log
    history = pd.read_csv(tmp_path / "results" / "models" / "resnet" / "history.csv")
    assert list(history["epoch"]) == list(range(epochs))
    assert (tmp_path / "results" / "models" / "resnet" / "mlflow_run_id.txt").read_text().strip() == run_id

    uninterrupted = tmp_path / "uninterrupted"
    run_snakemake(uninterrupted, *sample_args("--", target, configfiles=(cfg,)))
    hashes = [weights_sha256(load_classifier(run / target).net) for run in (tmp_path, uninterrupted)]
    assert hashes[0] == hashes[1]
    again = pd.read_csv(uninterrupted / "results" / "models" / "resnet" / "history.csv")
    val = [c for c in history if c.startswith(("val/", "train/"))]
    pd.testing.assert_frame_equal(history[val], again[val])


@pytest.mark.slow
def test_ddp_on_cpu_with_two_gloo_processes(tmp_path):
    """train.devices: 2 on the CPU: two DDP processes (gloo), one checkpoint, one MLflow run, metrics pooled."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text("train: {devices: 2, accelerator: cpu}\n")
    run_snakemake(tmp_path, *sample_args("--", "results/models/baseline_cnn/best.ckpt", configfiles=(cfg,)))
    results = tmp_path / "results"
    log = (results / "logs" / "train" / "baseline_cnn.log").read_text()
    assert "baseline_cnn trained in 2 process(es), strategy DDPStrategy" in log
    history = pd.read_csv(results / "models" / "baseline_cnn" / "history.csv")
    assert list(history["epoch"]) == [0, 1] and history["val/malignant_auroc"].between(0, 1).all()
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("skinlesion").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 logs nothing
    model = load_classifier(results / "models" / "baseline_cnn" / "best.ckpt")
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_the_sampler_draws_the_fit_loops_epoch_whenever_it_is_drawn_and_under_ddp():
    """The training sampler reads its epoch from the fit loop at each pass: the first pass of a resumed
    fit (drawn as the loader is set up, before Lightning's set_epoch) is the resumed epoch's, and the
    DDP wrapper, which never passes set_epoch on, splits that same epoch's draws between the ranks."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from skinlesion.train.datamodule import EpochSampler

    def draws(epoch):
        reference = EpochSampler(40, np.linspace(1, 2, 40), seed=7)
        reference.set_epoch(epoch)
        return list(reference)

    loop = {"epoch": 3}
    sampler = EpochSampler(40, np.linspace(1, 2, 40), seed=7, epoch=lambda: loop["epoch"])
    assert list(sampler) == draws(3) != draws(2)
    sampler.set_epoch(0)  # what an out-of-date set_epoch would say: the loop's count still rules
    assert list(sampler) == draws(3)

    ranks = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(draws(3))
    loop["epoch"] = 4
    assert list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=0, shuffle=False)) != ranks[0]


def test_the_training_loader_draws_each_pass_at_its_first_batch():
    """Lightning makes the training iterator as it sets the loader up, which a resumed fit does before
    it restores the fit loop's epoch (configure_optimizers reads estimated_stepping_batches); a plain
    DataLoader with workers hands them the sampler's first batches right then, drawn for epoch 0."""
    from skinlesion.train.datamodule import EpochSampler, FirstBatchLoader

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, item):
            return torch.tensor(item)

    def draws(epoch):
        reference = EpochSampler(40, seed=7)
        reference.set_epoch(epoch)
        return list(reference)

    loop = {"epoch": 0}
    sampler = EpochSampler(40, seed=7, epoch=lambda: loop["epoch"])
    loader = FirstBatchLoader(
        Items(), batch_size=8, sampler=sampler, num_workers=1, persistent_workers=True, drop_last=True
    )
    passes = iter(loader)  # as the loader is set up
    loop["epoch"] = 3  # the checkpoint's progress, restored afterwards
    assert [tuple(item) for batch in passes for item in batch.tolist()] == draws(3) != draws(0)
    loop["epoch"] = 4  # the next pass, through the same (persistent) worker
    assert [tuple(item) for batch in loader for item in batch.tolist()] == draws(4)
