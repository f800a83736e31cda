"""The comparison table across tiers and the one self-contained report, ``results/report.html``."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pandas as pd

from skinlesion.evaluate.metrics import recommended_tier
from skinlesion.formatting import (
    BY_KEY,
    HEADLINE,
    METRICS,
    OPERATING,
    format_ci,
    format_interval,
    format_value,
    format_values,
    headers,
    metric,
)
from skinlesion.io import atomic_path
from skinlesion.provenance import run_provenance
from skinlesion.tables import test_scorings

# Published results, shown beside ours with the caveats a reader needs to compare them fairly.
ANCHORS = [
    {
        "model": "ISIC 2018 Task 3 leaderboard, top entry",
        "balanced_accuracy": 0.885,
        "caveat": "ISIC 2018 test set (1,512 images), trained with external data, full resolution, ensembles",
    },
    {
        "model": "MedMNIST v2 DermaMNIST, ResNet-18 (28 px)",
        "accuracy": 0.735,
        "macro_auroc": 0.917,
        "caveat": "image-level split of HAM10000: images of one lesion sit in train and test (leaks); 28x28 px",
    },
]

# The comparison's metric columns: every metric of the specification (skinlesion.formatting), in its order.
COLUMNS = [m.key for m in METRICS]


# The metrics JSON's test blocks, and their rows' names in the comparison.
BLOCKS = (
    ("test", "{tier}"),
    ("test_with_metadata", "{tier} + metadata"),
    ("test_per_lesion", "{tier}, per lesion"),
    ("test_with_metadata_per_lesion", "{tier} + metadata, per lesion"),
    ("test_deployed", "{tier}, as deployed (ONNX fp32, no TTA)"),
    ("test_deployed_int8", "{tier}, as deployed (ONNX int8, no TTA)"),
)


def with_deployed(result: dict, deployed: dict) -> dict:
    """A tier's metrics with the blocks of its export scored as deployed (the evaluate_deployed rule's
    file): ``test_deployed``, ``test_deployed_int8``, and their ``external_*`` counterparts."""
    out = dict(result)
    for precision, suffix in (("fp32", ""), ("int8", "_int8")):
        for unit, block in deployed["onnx"].get(precision, {}).items():
            if unit in ("test", "external"):
                out[f"{unit}_deployed{suffix}"] = block
    return out


def comparison_table(
    metrics_files: list[str],
    histories: list[str],
    out_csv: str | os.PathLike,
    ensemble: str | None = None,
    deployed: list[str] | None = None,
) -> pd.DataFrame:
    """Rows per tier (value and 95% CI of each metric): by image and by lesion, each alone and with
    the metadata, and its export as deployed (``deployed``: the evaluate_deployed files, in the order
    of ``metrics_files``); the same for the ``ensemble`` of the tiers (mean of their probabilities)
    when given; then the published anchors."""
    results = [json.loads(Path(m).read_text()) for m in metrics_files]
    if deployed:
        results = [with_deployed(r, json.loads(Path(d).read_text())) for r, d in zip(results, deployed, strict=True)]
    models = [(r, pd.read_csv(h)) for r, h in zip(results, histories, strict=True)]
    if ensemble:
        models.append((json.loads(Path(ensemble).read_text()), None))
    rows = []
    for result, history in models:
        model = result["tier"] if history is not None else f"mean of {' + '.join(result['members'])}"
        for block, name in BLOCKS:
            if block not in result:
                continue
            row = {
                "model": name.format(tier=model),
                "image_size": result["image_size"],
                "epochs": len(history) if history is not None else None,
                "train_minutes": round(history["time/train_epoch_s"].sum() / 60, 1) if history is not None else None,
            }
            for key in COLUMNS:
                m = result[block]["metrics"].get(key)
                row[key] = round(m["value"], 4) if m else None
                row[f"{key}_ci"] = format_interval(m["ci_low"], m["ci_high"]) if m else None
            scored = result[block]
            row["caveat"] = "this pipeline: lesion-grouped test split, " + (
                f"{scored['n_lesions']} lesions, each once (its images' probabilities averaged)"
                if block.endswith("per_lesion")
                else f"{scored['n_images']} images"
            )
            if "metadata" in block:
                row["caveat"] += "; image + age, sex, body site (naive Bayes)"
            if "deployed" in block:
                row["caveat"] += "; the exported model as served: its temperature and threshold, no TTA"
            rows.append(row)
    table = with_integers(pd.DataFrame(rows + ANCHORS))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    return table


def with_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns whose values are all whole numbers (counts, sizes, epochs) as integers, so
    that they print as 32, not 32.000; missing values stay missing."""
    out = frame.copy()
    for column in out.columns:
        values = pd.to_numeric(out[column], errors="coerce")
        present = values.dropna()
        if len(present) and present.notna().sum() == out[column].notna().sum() and (present % 1 == 0).all():
            out[column] = values.astype("Int64")
    return out


def answer(result: dict, external: dict | None) -> pd.DataFrame:
    """The report's first table: the recommended model on the test split, per image and per lesion,
    alone and with the metadata, and on the external test set when there is one."""
    labels = {
        "test": "test, per image",
        "test_with_metadata": "test + metadata, per image",
        "test_per_lesion": "test, per lesion",
        "test_with_metadata_per_lesion": "test + metadata, per lesion",
        "test_deployed": "test, as deployed (ONNX fp32, no TTA), per image",
        "test_deployed_int8": "test, as deployed (ONNX int8, no TTA), per image",
    }
    scored = [(label, result[block]) for block, label in labels.items() if block in result]
    if external:
        scored.append(("external test set (per image)", external))
    for block, label in (("external_deployed", "fp32"), ("external_deployed_int8", "int8")):
        if block in result:
            scored.append((f"external test set, as deployed (ONNX {label}, no TTA)", result[block]))
    rows = []
    for name, block in scored:
        m = block["metrics"]
        row = {"scored on": name, "images": block["n_images"], "lesions": block.get("n_lesions")}
        for key in HEADLINE:
            if key in m:
                row[metric(key).header] = format_ci(m[key], metric(key).spec)
        if all(key in m for key in OPERATING):
            row[headers(OPERATING)] = format_values(m, OPERATING)
        row["threshold"] = f"{block['threshold']:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def metric_table(metrics: dict) -> pd.DataFrame:
    """A scored block's metrics, one row each (key, value, 95% CI): those of the specification in its
    order, then any other the block holds."""
    order = [m.key for m in METRICS if m.key in metrics] + [k for k in metrics if k not in BY_KEY]
    rows = []
    for key in order:
        entry, spec = metrics[key], BY_KEY[key].spec if key in BY_KEY else ".3f"
        rows.append(
            {"metric": key, "value": entry["value"], "95% CI": format_interval(entry["ci_low"], entry["ci_high"], spec)}
        )
    return pd.DataFrame(rows, columns=["metric", "value", "95% CI"])


def _img(path: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def rule_runtimes(benchmark_dir: str | os.PathLike) -> pd.DataFrame:
    """Wall time and peak memory of every job, from Snakemake's benchmark files."""
    rows = []
    for path in sorted(Path(benchmark_dir).rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        job = str(path.relative_to(benchmark_dir).with_suffix(""))
        rows.append(
            {"job": job, "seconds": round(float(bench["s"].iloc[0]), 1), "max_rss_mb": bench["max_rss"].iloc[0]}
        )
    return pd.DataFrame(rows, columns=["job", "seconds", "max_rss_mb"])


def report_environment(env):
    """The report template's Jinja environment with the metric formats of skinlesion.formatting as
    filters: ``entry|ci(spec, label)`` (value and interval) and ``value|value(spec)``."""
    env.filters["ci"] = lambda entry, spec, label="": format_ci(entry, spec.spec, label)
    env.filters["value"] = lambda value, spec: format_value(value, spec.spec)
    return env


def build_report(
    *,
    out_html: str | os.PathLike,
    config: dict,
    workflow_dir: str,
    checksums: str,
    split_counts: str,
    skipped: str,
    augment_preview: str,
    training_curves: str,
    comparison: str,
    metrics: dict[str, str],
    figures: dict[str, dict[str, str]],
    error_analysis: str | None,
    external: dict[str, str] | None,
    benchmark_dir: str,
    deployed: dict[str, str] | None = None,
    ledger: str | os.PathLike | None = None,
    model_cards: dict[str, str] | None = None,
) -> None:
    """Render every table and figure into one self-contained HTML page (images inlined); ``model_cards``
    (tier: MODEL_CARD.md) are linked, relative to the page."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = report_environment(
        Environment(loader=PackageLoader("skinlesion.report", "templates"), autoescape=select_autoescape())
    )

    def table(frame: pd.DataFrame) -> str:
        html = with_integers(frame).to_html(
            index=False, classes="table", border=0, na_rep="", float_format=lambda v: f"{v:.3f}"
        )
        return f'<div class="scroll">{html}</div>'

    tiers = []
    for tier, metrics_file in metrics.items():
        result = json.loads(Path(metrics_file).read_text())
        if deployed and tier in deployed:
            result = with_deployed(result, json.loads(Path(deployed[tier]).read_text()))
        per_class = pd.DataFrame(result["test"]["per_class"]).T.reset_index(names="class")
        scalar = metric_table(result["test"]["metrics"])
        tiers.append(
            {
                "name": tier,
                "result": result,
                "scalar": table(scalar),
                "per_class": table(per_class),
                "figures": {name: _img(path) for name, path in figures[tier].items()},
            }
        )
    external_tables = {}
    for tier, path in (external or {}).items():
        ext = json.loads(Path(path).read_text())
        external_tables[tier] = table(metric_table(ext["metrics"]))
    results = {t["name"]: t["result"] for t in tiers}
    recommended = recommended_tier(results) if results else None
    external_results = {tier: json.loads(Path(path).read_text()) for tier, path in (external or {}).items()}
    comparison_frame = pd.read_csv(comparison)
    skipped_frame = pd.read_csv(skipped)
    html = env.get_template("report.html.j2").render(
        title="skinlesion report",
        provenance=run_provenance(config, workflow_dir, checksums),
        config_yaml=_yaml(config),
        checksums=table(pd.read_csv(checksums)),
        split_counts=table(pd.read_csv(split_counts)),
        n_skipped=len(skipped_frame),
        skipped=table(skipped_frame) if len(skipped_frame) else "",
        augment_preview=_img(augment_preview),
        training_curves=_img(training_curves),
        comparison=table(comparison_frame),
        tiers=tiers,
        recommended=recommended,
        recommended_validation=results[recommended]["validation"] if recommended else None,
        answer=table(answer(results[recommended], external_results.get(recommended))) if recommended else "",
        external=external_tables,
        error_analysis=Path(error_analysis).read_text() if error_analysis else "",
        runtimes=table(rule_runtimes(benchmark_dir)),
        test_scorings=table(test_scorings(ledger)) if ledger else "",
        n_test_scorings=len(test_scorings(ledger)) if ledger else None,
        headline=[metric(key) for key in HEADLINE],
        operating=[metric(key) for key in OPERATING],
        model_cards={
            tier: Path(os.path.relpath(card, Path(out_html).parent)).as_posix()
            for tier, card in (model_cards or {}).items()
        },
    )
    with atomic_path(out_html) as tmp:
        tmp.write_text(html)


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
