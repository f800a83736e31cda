"""pyproject.toml, requirements.lock and envs/*.yaml agree on every pinned version."""

import re
import tomllib

import pytest
import yaml

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


def test_every_rule_env_exists():
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).is_file(), f"{smk.name} names {env}"
