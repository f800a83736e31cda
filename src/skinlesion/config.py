"""Workflow configuration: schema validation, cross-field checks and the data-file table.

Standard library (plus PyYAML and jsonschema, which Snakemake itself needs) only, so that the
Snakefile can import it in whatever environment runs Snakemake.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skinlesion.io import read_md5sums

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = ROOT / "workflow_config.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class FileSpec:
    """One dataset file as the config pins it."""

    name: str
    id: int | None = None
    size: int | None = None
    md5: str | None = None
    original: bool = False  # ask Dataverse for the original upload of an ingested table


def check_config(config: dict) -> dict:
    """Checks the JSON schema cannot express; raise ConfigError naming the key."""
    ratios = config["split"]["ratios"]
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split.ratios must sum to 1, got {total:g} ({ratios})")
    check_external_test(config)
    for tier in config["train"]["tiers"]:
        check_training(tier_settings(config["train"], tier), f"train ({tier})")
    variants = config["selection"]["variants"]
    for tier, named in variants.items():
        if DEFAULT in named:
            raise ConfigError(
                f"selection.variants.{tier}: {DEFAULT!r} names the tier's own settings; rename the variant"
            )
        for variant in named:
            variant_settings(config["train"], tier, variant, variants)
    return config


def check_external_test(config: dict) -> None:
    """``external_test.download`` fetches the external test set in a run that downloads from
    Dataverse; with a mirror or an external test folder it would do nothing, so it is refused."""
    if not config.get("external_test", {}).get("download"):
        return
    if config.get("data_dir"):
        raise ConfigError(
            "external_test.download: true does nothing with data_dir set: a run from a local mirror downloads "
            "nothing. Put the ISIC 2018 Task 3 test images and ground truth in a folder and name it with "
            "external_test_dir, or leave data_dir unset to download everything from Dataverse"
        )
    if config.get("external_test_dir"):
        raise ConfigError(
            "external_test.download: true and external_test_dir both name an external test set; set only one"
        )


def check_training(settings: dict, where: str) -> None:
    """Cross-field checks of one tier's resolved training settings; ``where`` names them in errors."""
    if settings["imbalance"] == "both":
        raise ConfigError(
            f"{where}: imbalance: both is refused: the sampler already balances the classes and the weighted "
            "loss then favours the rare ones again, so no class prior turns its probabilities into population "
            "probabilities (p_malignant, calibration); use sampler, weighted_loss or logit_adjust"
        )
    if settings["malignant_loss_weight"] and settings["imbalance"] == "sampler":
        raise ConfigError(
            f"{where}: malignant_loss_weight needs imbalance: weighted_loss, logit_adjust or none: the auxiliary "
            "loss fits the population malignant probability, but the sampler's class-balanced batches do not "
            "follow the population's class frequencies"
        )
    allowed = MONITORS[settings["task"]]
    if settings["monitor"] not in allowed:
        raise ConfigError(
            f"{where}: monitor: {settings['monitor']} is not logged for task: {settings['task']}; "
            f"use {' or '.join(allowed)}"
        )


def use_own_executables(needed: list[str]) -> str | None:
    """Put the folder of the running Python's executables first on PATH, so that the jobs of a
    Snakemake started as ``.venv/bin/snakemake`` find that environment's tools without activating
    it; return what to tell the user when one of ``needed`` is still missing, else None."""
    import shutil
    import sys

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    missing = [name for name in needed if shutil.which(name) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not found beside {sys.executable} or on PATH; the error-analysis rules need "
        "them: install the pinned environment (make venv) and run that environment's snakemake"
    )


def _resolved(schema: dict, root: dict) -> list[dict]:
    """``schema`` with its local ``$ref`` and its ``allOf`` parts, each a plain schema."""
    if "$ref" in schema:
        target = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return [schema] + [part for sub in schema.get("allOf", []) for part in _resolved(sub, root)]


def typed_command_line(value, schema: dict, root: dict):
    """``value`` with every string the schema refuses replaced by the YAML value it spells, where the
    schema accepts that one.

    Snakemake reads a nested ``--config`` value (``'export={quantize: true}'``) with YAML's BaseLoader,
    so all its scalars arrive as strings ('true', '3'), which the schema would refuse."""
    import yaml
    from jsonschema.validators import validator_for

    parts = _resolved(schema, root)
    if isinstance(value, dict):
        children = {k: v for part in parts for k, v in part.get("properties", {}).items()}
        extra = next(
            (p["additionalProperties"] for p in parts if isinstance(p.get("additionalProperties"), dict)), None
        )
        subschemas = {k: children.get(k, extra) for k in value}
        return {k: typed_command_line(v, subschemas[k], root) if subschemas[k] else v for k, v in value.items()}
    if isinstance(value, list):
        items = next((p["items"] for p in parts if isinstance(p.get("items"), dict)), None)
        return [typed_command_line(v, items, root) for v in value] if items else value
    if isinstance(value, str):
        leaf = {**schema, "definitions": root.get("definitions", {})}
        validator = validator_for(root)(leaf)
        if not validator.is_valid(value):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return parsed if validator.is_valid(parsed) else value
    return value


def typed_config(config: dict) -> dict:
    """The workflow's ``config`` with the strings of nested ``--config`` values typed
    (:func:`typed_command_line`) against schemas/config.schema.yaml."""
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    return typed_command_line(config, schema, schema)


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, overrides: dict | None = None) -> dict:
    """Read a config file, apply overrides, validate against the schema and fill defaults."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text()) or {}
    config.update(overrides or {})
    validate(config, str(SCHEMA))
    return check_config(config)


def data_files(config: dict) -> dict[str, FileSpec]:
    """The raw files the workflow fetches, by name, with the size and MD5 expected of them.

    From Dataverse, the sizes and MD5s pinned in the config. From a local mirror (``data_dir``),
    the MD5s that the mirror's own ``MD5SUMS`` file lists and no size (a mirror may be
    re-encoded, as the downscaled one is, so its bytes differ from Dataverse's).
    """
    files = dict(config["files"])
    data_dir = config.get("data_dir")
    if not data_dir:
        if config["external_test"]["download"]:
            files.update(config["external_test"]["files"])
        return {name: FileSpec(name=name, **spec) for name, spec in files.items()}
    sums_path = Path(data_dir) / "MD5SUMS"
    if not sums_path.is_file():
        raise ConfigError(
            f"data_dir: the mirror directory {data_dir} has no MD5SUMS file; create one "
            f"inside it with `md5sum {' '.join(files)} > MD5SUMS`"
        )
    sums = read_md5sums(sums_path)
    missing = [name for name in files if name not in sums]
    if missing:
        raise ConfigError(f"data_dir: {sums_path} lists no MD5 for {', '.join(missing)}")
    return {name: FileSpec(name=name, md5=sums[name]) for name in files}


TIERS = ("baseline_cnn", "resnet", "transfer")
# The validation metrics each task logs that can pick the best checkpoint (all maximised).
MONITORS = {"multiclass": ("val/bal_acc", "val/auroc", "val/malignant_auroc"), "binary": ("val/auroc",)}


# The selection variant that names a tier's own settings (selection.variants may not use it).
DEFAULT = "default"


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested blocks (model, augment) key by key; neither
    argument is changed."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tier_settings(train_cfg: dict, tier: str) -> dict:
    """The shared train settings with the tier's own block laid over them, nested blocks (augment)
    key by key (what one job uses)."""
    shared = {k: v for k, v in train_cfg.items() if k not in ("tiers", *TIERS)}
    return deep_merge(shared, train_cfg[tier])


def variant_settings(train_cfg: dict, tier: str, variant: str, variants: dict) -> dict:
    """The resolved training settings of one selection variant: the tier's settings for
    :data:`DEFAULT`, else those with the variant's overrides laid over them (:func:`deep_merge`)."""
    settings = tier_settings(train_cfg, tier)
    if variant != DEFAULT:
        named = variants.get(tier, {})
        if variant not in named:
            raise ConfigError(f"selection.variants.{tier}: no variant {variant!r}; configured: {sorted(named)}")
        settings = deep_merge(settings, named[variant])
    check_training(settings, f"selection.variants.{tier}.{variant}")
    return settings
