import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
MIRROR = (ROOT / ".." / "shared" / "data" / "ham10000").resolve()
FULLRES = (ROOT / ".." / "shared" / "data" / "ham10000_fullres_sample").resolve()
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SAMPLE_CONFIG = ROOT / "profiles" / "sample" / "sample.yaml"
ARTIFACTS = ROOT / "tests" / "artifacts"


def need(path: Path) -> Path:
    """The shared real data. Where it is promised (SKINLESION_REQUIRE_DATA, set by .ci/run) a missing
    copy is a failure; elsewhere (GitHub's runners) the test is skipped and listed as such."""
    if not path.exists():
        if os.environ.get("SKINLESION_REQUIRE_DATA"):
            pytest.fail(f"{path} is missing; .ci/run must run with ../shared beside the checkout")
        pytest.skip(f"not run: the HAM10000 data {path} is not present")
    return path


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the project's workflow with ``workdir`` as its working directory (``env`` adds variables)."""
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    # Shell rules (nbconvert) need the environment's executables, as in an activated venv.
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def mirror() -> Path:
    return need(MIRROR)


@pytest.fixture(scope="session")
def mirror_run(tmp_path_factory, mirror) -> Path:
    """The data stage run once by Snakemake on the full 10,015-image mirror."""
    workdir = tmp_path_factory.mktemp("mirror_run")
    run_snakemake(workdir, "--config", f"data_dir={mirror}", "--", "data")
    return workdir


def dry_run_jobs(output: str, field: str) -> dict[str, list[str | None]]:
    """rule -> one entry per job of a dry run's printed plan: that job's ``field`` line (``input``,
    ``resources``, ...), or None where the job prints none."""
    jobs: dict[str, list[str | None]] = {}
    rule = None
    for line in output.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            rule = match.group(1)
            jobs.setdefault(rule, []).append(None)
        elif rule and (match := re.match(rf"\s+{field}: (.*)$", line)):
            jobs[rule][-1] = match.group(1)
    return jobs


def sample_args(*extra: str, configfiles: tuple = ()) -> list[str]:
    """Snakemake arguments for the bundled sample with its small training settings.

    ``extra`` continues the ``--config`` list (key=value) or starts new options; further
    config files go in ``configfiles`` (a second --configfile would replace the first).
    """
    return ["--configfile", str(SAMPLE_CONFIG), *map(str, configfiles), "--config", f"data_dir={SAMPLE}", *extra]


def external_test_dir(dest: Path, form: str = "metadata") -> Path:
    """An external test folder from the 600x450 HAM10000 images: the images and one ground truth."""
    import pandas as pd

    source = need(FULLRES)
    images = dest / "images"
    images.mkdir(parents=True)
    for jpg in source.glob("*.jpg"):
        (images / jpg.name).write_bytes(jpg.read_bytes())
    meta = pd.read_csv(source / "metadata.csv")
    if form == "metadata":
        meta.to_csv(dest / "ground_truth.csv", index=False)
    else:
        onehot = pd.DataFrame({"image": meta["image_id"]})
        for name in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"):
            onehot[name] = (meta["dx"].str.upper() == name).astype(float)
        onehot.to_csv(dest / "ground_truth.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """The whole workflow run once by Snakemake on the bundled sample, with an external test set."""
    workdir = tmp_path_factory.mktemp("sample_run")
    external_test_dir(workdir / "external")
    run_snakemake(workdir, *sample_run_args(workdir))
    return workdir


def sample_run_args(workdir: Path, *extra: str, configfiles: tuple = ()) -> list[str]:
    """The arguments the ``sample_run`` fixture ran with (its external test set included)."""
    return sample_args(f"external_test_dir={workdir / 'external'}", *extra, configfiles=configfiles)


def chromium() -> str:
    """A headless Chromium for playwright: $CHROMIUM, else Debian's. CI installs one (.ci/run: Debian's,
    GitHub Actions: Playwright's build); elsewhere a missing one skips."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; .ci/run installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], ready_url: str, timeout: float = 120.0, **kwargs):
    """Start a server process, wait until ``ready_url`` answers 200, stop it afterwards."""
    import requests

    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below) - a file, not a pipe: a chatty server never blocks
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, **kwargs)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{command} exited with {proc.returncode}:\n{log.read()[-3000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{ready_url} did not answer within {timeout} s")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# The slow layer, marked here rather than by hand so that a new test lands in it by what it does:
# a test is slow when it requests a fixture that runs the workflow (directly or through another
# fixture: ``item.fixturenames`` holds them all), or when its own code, or a helper of its own module
# that it calls, uses one of the names that start Snakemake or a browser. Tests slow for other
# reasons carry the mark by hand. ``make test-fast`` (``pytest -m "not slow"``) leaves them out.
WORKFLOW_FIXTURES = frozenset({"sample_run", "mirror_run"})
SLOW_CALLS = frozenset({"run_snakemake", "SNAKEMAKE", "chromium"})


def _code_names(code) -> set[str]:
    """The global names a function's code refers to, nested functions and comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _calls(function, seen: set | None = None) -> set[str]:
    """The names ``function`` refers to, and those of the functions of its own module it calls (the
    test module's helpers), transitively."""
    seen = set() if seen is None else seen
    seen.add(function)
    names = _code_names(function.__code__)
    for name in names - SLOW_CALLS:
        helper = function.__globals__.get(name)
        own = getattr(helper, "__module__", None) == function.__module__ and hasattr(helper, "__code__")
        if own and helper not in seen:
            names |= _calls(helper, seen)
    return names


def slow_reason(item: pytest.Item) -> str | None:
    """Why ``item`` belongs to the slow layer, or None."""
    fixtures = WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
    if fixtures:
        return f"uses the workflow fixture {', '.join(sorted(fixtures))}"
    function = getattr(item, "function", None)
    calls = SLOW_CALLS & _calls(function) if hasattr(function, "__code__") else set()
    if calls:
        return f"calls {', '.join(sorted(calls))}"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and slow_reason(item):
            item.add_marker(pytest.mark.slow)
