"""A bad config fails at workflow start with the schema's (or the cross-field check's) message."""

import copy

import pytest
import yaml

from conftest import ROOT, SAMPLE, SAMPLE_CONFIG, run_snakemake, sample_args
from skinlesion.config import ConfigError, load_config, typed_config


def _dry_run(tmp_path, extra: dict):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(extra))
    return run_snakemake(tmp_path, "-n", "--configfile", str(cfg), "--config", f"data_dir={SAMPLE}", check=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"seed": "forty-two"}, "'forty-two' is not of type 'integer'"),
        ({"train": {"tiers": ["resnet", "vgg_huge"]}}, "'vgg_huge' is not one of"),
        ({"preprocess": {"image_size": 128, "on_bad_image": "ignore"}}, "'ignore' is not one of"),
        ({"split": {"ratios": {"train": 0.8, "val": 0.15, "test": 0.15}}}, "split.ratios must sum to 1, got 1.1"),
        ({"sedd": 1}, "Additional properties are not allowed ('sedd' was unexpected)"),
        ({"train": {"task": "binary"}}, "train (baseline_cnn): monitor: val/bal_acc is not logged for task: binary"),
        # Both would leave the reported (population) probabilities without a prior that fits them.
        ({"train": {"resnet": {"imbalance": "both"}}}, "train (resnet): imbalance: both is refused"),
        (
            {"train": {"malignant_loss_weight": 1.0}},
            "train (baseline_cnn): malignant_loss_weight needs imbalance: weighted_loss, logit_adjust or none",
        ),
    ],
)
def test_bad_config_fails_at_start(tmp_path, override, message):
    proc = _dry_run(tmp_path, override)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_external_test_download_with_a_mirror_fails_at_start_naming_both_keys(tmp_path):
    """A run from a mirror downloads nothing, so the README's download switch would be dropped silently."""
    proc = run_snakemake(tmp_path, "-n", *sample_args("external_test={download: true}"), check=False)
    assert proc.returncode != 0
    assert "external_test.download: true does nothing with data_dir set" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
    with pytest.raises(ConfigError, match="external_test.download: true and external_test_dir both name"):
        load_config(
            ROOT / "workflow_config.yaml", {"external_test": {"download": True}, "external_test_dir": str(tmp_path)}
        )


def test_default_config_is_valid_and_documented():
    config = load_config(ROOT / "workflow_config.yaml")
    assert config["split"]["ratios"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())

    def undocumented(node, path):
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub and "$ref" not in sub:
                yield path + key
            yield from undocumented(sub, f"{path}{key}.")

    assert list(undocumented(schema, "")) == []


def test_load_config_rejects_ratio_sum(tmp_path):
    with pytest.raises(ConfigError, match="split.ratios must sum to 1"):
        load_config(ROOT / "workflow_config.yaml", {"split": {"ratios": {"train": 0.5, "val": 0.2, "test": 0.2}}})


def test_mirror_without_md5sums_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="has no MD5SUMS file"):
        from skinlesion.config import data_files

        data_files(load_config(ROOT / "workflow_config.yaml", {"data_dir": str(tmp_path)}))


def test_tier_block_overrides_shared_settings():
    from skinlesion.config import tier_settings

    train = load_config(ROOT / "workflow_config.yaml")["train"]
    resnet = tier_settings(train, "resnet")
    assert resnet["image_size"] == train["resnet"]["image_size"]
    assert resnet["lr"] == train["lr"] and resnet["augment"] == train["augment"]
    assert "tiers" not in resnet and "baseline_cnn" not in resnet


def test_tier_block_overrides_nested_blocks_key_by_key(tmp_path):
    """A tier that sets one augment key keeps the shared block's others (and theirs nested)."""
    from skinlesion.config import tier_settings

    raw = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    raw["train"]["resnet"]["augment"] = {"flip": False, "color_jitter": {"hue": 0.1}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    train = load_config(cfg)["train"]  # the schema and the cross-field checks accept it
    shared = train["augment"]
    resnet = tier_settings(train, "resnet")
    assert resnet["augment"] == {
        **shared,
        "flip": False,
        "color_jitter": {**shared["color_jitter"], "hue": 0.1},
    }
    assert tier_settings(train, "baseline_cnn")["augment"] == shared
    assert train["augment"]["flip"] is True and train["augment"]["color_jitter"]["hue"] == 0  # not mutated


def test_bf16_cpu_profile_is_a_valid_longer_config():
    """The profile for CPUs with bf16 validates against the schema and only trains more: longer for
    the tiers that train in bf16 there, as long for the transfer tier, which trains in fp32."""
    from snakemake.utils import update_config, validate

    from skinlesion.config import check_config, tier_settings

    profile = yaml.safe_load((ROOT / "profiles" / "bf16-cpu" / "config.yaml").read_text())
    default = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    config = copy.deepcopy(default)
    update_config(config, yaml.safe_load((ROOT / profile["configfile"]).read_text()))
    validate(config, str(ROOT / "schemas" / "config.schema.yaml"))
    check_config(config)
    longer = []
    for tier in default["train"]["tiers"]:
        long, short = tier_settings(config["train"], tier), tier_settings(default["train"], tier)
        assert long["epochs"] >= short["epochs"] and long["image_size"] == short["image_size"], tier
        longer += [tier] if long["epochs"] > short["epochs"] else []
        widths = long["model"].get("widths", []), short["model"].get("widths", [])
        assert all(w >= s for w, s in zip(*widths, strict=True)), tier
    assert longer == ["baseline_cnn", "resnet"]
    assert tier_settings(config["train"], "resnet")["model"]["widths"] == [64, 128, 256, 512]


def test_train_jobs_request_gpus_from_the_config(tmp_path):
    def dry(extra: dict) -> str:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(yaml.safe_dump({"data_dir": str(SAMPLE), **extra}))
        proc = run_snakemake(tmp_path, "-n", "--configfile", str(cfg), "--", "results/models/resnet/best.ckpt")
        return proc.stdout + proc.stderr

    assert "gpu=1," in dry({})
    assert "gpu=2," in dry({"train": {"devices": 2}})
    assert "gpu=0," in dry({"train": {"accelerator": "cpu"}})


def test_nested_command_line_values_get_the_types_the_schema_names(tmp_path):
    """Snakemake reads 'export={quantize: true}' with YAML's BaseLoader (every scalar a string)."""
    typed = typed_config(
        {
            "seed": "forty-two",
            "export": {"quantize": "true", "calibration_images": "64"},
            "train": {"num_workers": "2", "resnet": {"epochs": "3", "precision": "32-true"}},
            "selection": {"variants": {"resnet": {"short": {"epochs": "4", "mixup_alpha": "0.2"}}}},
        }
    )
    assert typed["export"] == {"quantize": True, "calibration_images": 64}
    assert typed["train"] == {"num_workers": 2, "resnet": {"epochs": 3, "precision": "32-true"}}
    assert typed["selection"]["variants"]["resnet"]["short"] == {"epochs": 4, "mixup_alpha": 0.2}
    assert typed["seed"] == "forty-two"  # still refused, by the schema, with its message
    proc = run_snakemake(
        tmp_path, "-n", "--configfile", str(SAMPLE_CONFIG), "--config", f"data_dir={SAMPLE}", "export={quantize: true}"
    )
    assert "results/export/resnet/model.int8.onnx" in proc.stdout
