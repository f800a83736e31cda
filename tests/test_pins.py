"""pyproject.toml, requirements.lock and envs/*.yaml agree on every pinned version."""

import re
import tomllib

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

from conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        m = PIN.match(line.strip())
        if m:
            found[norm(m.group(1))] = m.group(2)
    return found


LOCK = pins((ROOT / "requirements.lock").read_text().splitlines())


def test_pyproject_pins_match_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    assert all("==" in d for d in declared), "every dependency is pinned exactly"
    for name, version in pins(declared).items():
        assert LOCK.get(name) == version, f"{name}: pyproject {version}, lock {LOCK.get(name)}"
    assert LOCK["torch"] == "2.14.1" and LOCK["torchvision"] == "0.29.1"


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_match_the_lock(env):
    spec = yaml.safe_load(env.read_text())
    assert "python=3.11" in spec["dependencies"]
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    env_pins = pins(pip)
    assert len(env_pins) == len(pip), f"{env.name}: every pip line is pinned with =="
    for name, version in env_pins.items():
        assert LOCK.get(name) == version, f"{env.name}: {name} {version}, lock {LOCK.get(name)}"


# PEP 508 marker values of the platforms the lock is meant for (Python 3.11 on each).
PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
}
# Where the CUDA wheels (nvidia-*, triton, cuda-*) belong: exactly where torch 2.14.1's own wheels
# require them (its Requires-Dist marker is platform_system == "Linux", on x86_64 and aarch64 alike;
# every pinned CUDA wheel exists for both). A marker false on Linux aarch64 would not keep them off
# there, as torch pulls them in, only leave them unpinned; macOS has none of these wheels.
CUDA_ON = {"linux-x86_64": True, "linux-aarch64": True, "macos-arm64": False}


def environment(platform: str) -> dict[str, str]:
    return default_environment() | {"python_version": "3.11", "python_full_version": "3.11.7"} | PLATFORMS[platform]


def lock_requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return [Requirement(line) for line in map(str.strip, lines) if line and not line.startswith("#")]


@pytest.mark.parametrize("platform", sorted(CUDA_ON))
def test_cuda_wheels_are_pinned_only_where_torch_uses_them(platform):
    cuda = [r for r in lock_requirements() if re.match(r"nvidia-|triton$|cuda-", norm(r.name))]
    assert {"triton", "nvidia-cudnn-cu13", "nvidia-cublas"} <= {norm(r.name) for r in cuda}
    for req in cuda:
        assert req.marker is not None, f"{req}: a CUDA wheel needs a platform marker"
        assert req.marker.evaluate(environment(platform)) is CUDA_ON[platform], f"{req} on {platform}"


def test_torch_is_pinned_on_every_platform():
    reqs = {norm(r.name): r for r in lock_requirements()}
    for name in ("torch", "torchvision"):
        assert reqs[name].marker is None, f"{reqs[name]}: torch and torchvision are pinned for every platform"


def test_every_rule_env_exists():
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).is_file(), f"{smk.name} names {env}"
