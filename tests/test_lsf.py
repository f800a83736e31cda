"""profiles/dtu-lsf without a cluster: fake LSF commands run each submitted job on this machine."""

import os
import re
import shlex

import yaml

from conftest import ROOT, dry_run_jobs, run_snakemake, sample_args

LSF_COMMANDS = ("bsub", "bjobs", "bkill", "badmin", "lsclusters", "bhist")
GPU_REQUEST = ["-gpu", "num=1:mode=exclusive_process"]


def fake_lsf(home):
    """A folder of LSF commands (all tests/fake_lsf.py) to put first on PATH."""
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    for name in LSF_COMMANDS:
        (bin_dir / name).symlink_to(ROOT / "tests" / "fake_lsf.py")
    return bin_dir


def test_sample_workflow_runs_through_the_lsf_profile_with_gpu_requests_on_train_only(tmp_path):
    profile = yaml.safe_load((ROOT / "profiles" / "dtu-lsf" / "config.yaml").read_text())
    assert profile["executor"] == "lsf" and profile["set-resources"]["train"]["lsf_queue"] == "gpuv100"
    assert profile.pop("use-conda") is True  # the only change: no conda binary on the test machines
    profile["seconds-between-status-checks"] = 2
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))

    home = tmp_path / "lsf"
    bin_dir = fake_lsf(home)
    env = {"FAKE_LSF_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    workdir = tmp_path / "run"
    run_snakemake(workdir, "--profile", str(tmp_path / "profile"), *sample_args(), env=env)

    assert (workdir / "results" / "report.html").stat().st_size > 100_000
    submissions = [shlex.split(line) for line in (home / "bsub.log").read_text().splitlines()]
    rules = [args[args.index("-J") + 1].split("___")[0] for args in submissions]
    train = [args for args, rule in zip(submissions, rules, strict=True) if rule.startswith("Snakemake_rule_train:")]
    others = [
        args for args, rule in zip(submissions, rules, strict=True) if not rule.startswith("Snakemake_rule_train:")
    ]
    assert sorted(r.split("tier=")[1] for r in rules if "rule_train:" in r) == ["baseline_cnn", "resnet", "transfer"]
    assert len(others) >= 10  # download, checksum, preprocess, split, ..., export, report: all went through bsub

    def has(args, seq):
        return any(args[i : i + len(seq)] == seq for i in range(len(args)))

    for args in train:
        assert has(args, GPU_REQUEST) and has(args, ["-q", "gpuv100"]) and has(args, ["-W", "60"])
    for args in others:
        assert "-gpu" not in args and has(args, ["-q", "hpc"])
    assert all(has(args, ["-cwd", str(workdir)]) for args in submissions)


def test_gpu_request_is_sized_from_train_devices(tmp_path):
    """The gpu resource and the LSF -gpu request both follow train.devices (dry run)."""
    targets = [f"results/models/{tier}/best.ckpt" for tier in ("baseline_cnn", "resnet", "transfer")]
    (tmp_path / "gpus.yaml").write_text("train: {devices: 2, accelerator: gpu}\n")
    (tmp_path / "cpu.yaml").write_text("train: {accelerator: cpu}\n")
    out = run_snakemake(
        tmp_path, "-n", "--forceall", *sample_args(configfiles=[tmp_path / "gpus.yaml"]), "--", *targets
    ).stdout
    resources = re.findall(r"rule train:.*?resources: ([^\n]*)", out, re.S)
    assert len(resources) == 3
    for line in resources:
        assert "gpu=2" in line and 'lsf_extra=-gpu "num=2:mode=exclusive_process"' in line
    out = run_snakemake(tmp_path, "-n", "--forceall", *sample_args(configfiles=[tmp_path / "cpu.yaml"]), "--", *targets)
    assert "gpu=0" in out.stdout and "-gpu" not in out.stdout


def test_gpu_profile_alone_and_with_the_lsf_profile_dry_runs_with_gpus_on_training_jobs_only(tmp_path):
    """profiles/gpu on one machine, and its settings with profiles/dtu-lsf: both dry-run cleanly; only
    the training jobs (train, cv_fold) ask for the GPU, and on LSF they go to the GPU queue."""
    targets = ["--", "all", "results/selection/baseline_cnn.csv"]
    local = run_snakemake(tmp_path / "local", "-n", "--profile", str(ROOT / "profiles" / "gpu"), *sample_args(*targets))
    profile = yaml.safe_load((ROOT / "profiles" / "dtu-lsf" / "config.yaml").read_text())
    profile.pop("use-conda")  # no conda binary on the test machines
    (tmp_path / "lsf").mkdir()
    (tmp_path / "lsf" / "config.yaml").write_text(yaml.safe_dump(profile))
    gpu_config = ROOT / "profiles" / "gpu" / "gpu.yaml"
    cluster = run_snakemake(
        tmp_path / "cluster",
        "-n",
        "--profile",
        str(tmp_path / "lsf"),
        *sample_args(*targets, configfiles=(gpu_config,)),
    )
    for proc, queue in ((local, None), (cluster, "lsf_queue=gpuv100")):
        jobs = dry_run_jobs(proc.stdout + proc.stderr, "resources")
        assert {"train", "cv_fold", "evaluate", "export"} <= set(jobs)
        for rule, lines in jobs.items():
            training = rule in ("train", "cv_fold")
            for line in filter(None, lines):
                assert ("gpu=1" in line.split(", ")) == training, (rule, line)
                assert ('lsf_extra=-gpu "num=1:mode=exclusive_process"' in line) == training, (rule, line)
                if queue:
                    assert (queue in line) == training, (rule, line)
