"""The container image, built and run: the sample workflow inside it gives the native run's bytes,
and the service started from it answers /predict.

The image is built the way users build it (`make image`), from a base made offline by
docker/local-base.sh with the interpreter of this test's own environment. .ci/run installs podman.
"""

import os
import shutil
import subprocess
import sys
import uuid
import zipfile

import pytest
import requests

from conftest import ROOT, SAMPLE, free_port, running

pytestmark = pytest.mark.slow

TIERS = ("baseline_cnn", "resnet", "transfer")
IMAGE = "localhost/skinlesion-test"
IMAGE_UID = 1000  # the image's non-root user (docker/Dockerfile)
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "docker" / "containers.conf")}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        if os.environ.get("CI"):
            pytest.fail("podman or mmdebstrap is missing; .ci/run installs them")
        pytest.skip("podman not installed (apt-get install podman runc mmdebstrap)")
    base = subprocess.run(
        [str(ROOT / "docker" / "local-base.sh"), sys.base_prefix],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert base.returncode == 0, base.stderr[-4000:]
    build = subprocess.run(
        ["make", "image", f"BASE={base.stdout.split()[-1]}", f"IMAGE={IMAGE}"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def writable_by_image(path):
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        path.chmod(0o777)
    return path


def test_sample_workflow_in_the_image_gives_the_native_bytes(image, sample_run, tmp_path):
    """The image's default command (the bundled-sample workflow), with the native run's external test set."""
    results = writable_by_image(tmp_path / "results")
    podman(
        "run",
        "--rm",
        "-v",
        f"{results}:/skinlesion/results",
        "-v",
        f"{sample_run / 'external'}:/external:ro",
        image,
        "--profile",
        "profiles/sample",
        "--config",
        "external_test_dir=/external",
    )
    assert (results / "report.html").stat().st_size > 0
    same = ["data/split.csv", "data/split_counts.csv", "data/norm_stats.json", "metrics/ensemble.json"]
    for tier in TIERS:
        same += [f"metrics/{tier}.json", f"metrics/{tier}_external.json"]
        same += [f"predictions/{tier}_test.csv", f"predictions/{tier}_external.csv"]
        same += [f"export/{tier}/model.onnx", f"export/{tier}/model.json"]
    for name in same:
        assert (results / name).read_bytes() == (sample_run / "results" / name).read_bytes(), name


def test_the_service_runs_from_the_image_and_classifies_a_bundled_image(image, sample_run):
    with zipfile.ZipFile(SAMPLE / "HAM10000_images_part_1.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".jpg"))
        jpeg = archive.read(name)
    port, container = free_port(), f"skinlesion-test-{uuid.uuid4().hex[:8]}"
    command = [
        "podman", "run", "--rm", "--name", container, "-p", f"127.0.0.1:{port}:8000",
        "-v", f"{sample_run / 'results'}:/skinlesion/results:ro",
        image, "serve", "--model", "results/export/baseline_cnn", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    try:
        with running(command, f"http://127.0.0.1:{port}/health", timeout=180, env=ENV):
            response = requests.post(
                f"http://127.0.0.1:{port}/predict", files=[("files", (name, jpeg, "image/jpeg"))], timeout=60
            )
    finally:
        podman("rm", "--force", "--ignore", container)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["file"] == name and prediction["decision"] in ("benign", "malignant")
    assert podman("ps", "--all", "--quiet", "--filter", f"name={container}").stdout.strip() == ""
