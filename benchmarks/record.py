"""Record a finished measurement as a results file under benchmarks/results/, which the docs render from.

    python benchmarks/record.py selection --results RESULTS_DIR --tier baseline_cnn \\
        --command "snakemake --cores 2 results/selection/baseline_cnn.csv --config data_dir=..."
    /usr/bin/time -v -o time.log snakemake --cores 2 results/report.html --config data_dir=...
    python benchmarks/record.py workflow --results RESULTS_DIR --time-log time.log \\
        --command "snakemake --cores 2 results/report.html --config data_dir=..."

``selection``: the selection table ``RESULTS_DIR/selection/{tier}.csv`` of a workflow run, with the
variants' settings (from workflow_config.yaml), the number of trainings and their summed wall time
(the cv_fold and select jobs' Snakemake benchmark files), the hardware, the date the table was
written and the commit (``--commit``, default the checkout's). Writes
``benchmarks/results/selection/{tier}.json``.

``workflow``: a whole run of the workflow: per tier and for the mean of the tiers, the validation
scores and the test blocks of the metrics JSONs (per image and per lesion, with and without
metadata, with their CIs and thresholds), and the train and evaluate rules' wall time and memory,
the epochs' median time and data-wait share (history.csv); the run's wall time and peak memory from
``--time-log``, the output of ``/usr/bin/time -v`` around the Snakemake command; the commit and
configuration hash the metrics JSONs record. Writes ``benchmarks/results/workflow.json``.

Then ``python -m skinlesion.rendered README.md docs/*.md``.
"""

import argparse
import json
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from skinlesion.config import load_config
from skinlesion.evaluate.metrics import recommended_tier
from skinlesion.io import atomic_path
from skinlesion.provenance import git_commit, measurement
from skinlesion.tables import test_scorings

ROOT = Path(__file__).resolve().parents[1]


def record_selection(results: Path, tier: str, command: str, commit: str) -> dict:
    table = pd.read_csv(results / "selection" / f"{tier}.csv", dtype={"fold": str})
    per_fold = table[~table["fold"].isin(["mean", "sd"])]
    benchmarks = [*(results / "benchmarks" / "cv_fold" / tier).glob("*/fold*.tsv")]
    benchmarks.append(results / "benchmarks" / "select" / f"{tier}.tsv")
    seconds = sum(pd.read_csv(path, sep="\t")["s"].sum() for path in benchmarks)
    written = datetime.fromtimestamp((results / "selection" / f"{tier}.csv").stat().st_mtime, UTC)
    # The table names its variants; their settings come from the configuration, which must be the run's.
    variants = load_config()["selection"]["variants"].get(tier, {})
    if set(table["variant"]) != {"default", *variants}:
        raise SystemExit(
            f"{results}/selection/{tier}.csv compares {sorted(set(table['variant']))}, but workflow_config.yaml "
            f"configures {sorted(variants)}: record a run from a checkout of the commit it ran at"
        )
    return {
        "kind": "selection",
        "tier": tier,
        "folds": int(per_fold["fold"].nunique()),
        "variants": variants,
        "rows": json.loads(table.to_json(orient="records")),
        "trainings": len(per_fold),
        "wall_minutes": round(seconds / 60, 1),
        **measurement(command, commit, written),
    }


def _job(results: Path, name: str) -> dict:
    """Wall minutes and peak RSS of one job, from its Snakemake benchmark file."""
    bench = pd.read_csv(results / "benchmarks" / f"{name}.tsv", sep="\t").iloc[0]
    return {"minutes": round(float(bench["s"]) / 60, 1), "peak_rss_mb": round(float(bench["max_rss"]))}


def _scored(result: dict) -> dict:
    """The test (and external) blocks of a metrics JSON, without their per-class tables."""
    blocks = [b for b in result if b.startswith(("test", "external"))]
    return {b: {k: v for k, v in result[b].items() if k not in ("per_class", "provenance")} for b in blocks}


def time_log(path: Path) -> dict:
    """Wall minutes and peak RSS from the output of ``/usr/bin/time -v``."""
    text = path.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not (wall and rss):
        raise SystemExit(
            f"{path}: not the output of /usr/bin/time -v (no wall clock time or maximum resident set size)"
        )
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.group(1).split(":"))))
    return {"wall_minutes": round(seconds / 60, 1), "driver_peak_rss_mb": round(int(rss.group(1)) / 1024)}


def record_workflow(results: Path, command: str, time_log_file: Path) -> dict:
    metrics = {p.stem: json.loads(p.read_text()) for p in sorted((results / "metrics").glob("*.json"))}
    tiers = [
        name for name, m in metrics.items() if "members" not in m and not name.endswith(("_external", "_deployed"))
    ]
    if not tiers:
        raise SystemExit(f"{results}/metrics holds no tier's metrics JSON: is it a finished run's results/?")
    ensemble = metrics.get("ensemble")
    tiers = ensemble["members"] if ensemble else tiers
    provenance = {(m["provenance"]["git_commit"], m["provenance"]["config_sha256"]) for m in metrics.values()}
    if len(provenance) != 1:
        raise SystemExit(f"{results}/metrics: the metrics JSONs come from different commits or configurations")
    ((commit, config_sha256),) = provenance
    models = []
    for tier in tiers:
        result, history = metrics[tier], pd.read_csv(results / "models" / tier / "history.csv")
        epoch_s = history["time/train_epoch_s"]
        models.append(
            {
                "model": tier,
                "image_size": result["image_size"],
                "epochs": len(history),
                "train": _job(results, f"train/{tier}"),
                "evaluate": _job(results, f"evaluate/{tier}"),
                "median_epoch_s": round(statistics.median(epoch_s), 1),
                "epoch_s_range": [round(epoch_s.min()), round(epoch_s.max())],
                "data_wait_pct": round(100 * statistics.median(history["time/data_wait_frac"]), 1),
                "validation": result["validation"],
                **_scored(result),
            }
        )
        if f"{tier}_external" in metrics:
            models[-1]["external"] = _scored({"test": metrics[f"{tier}_external"]})["test"]
        if f"{tier}_deployed" in metrics:  # the export as served: ONNX, no TTA, its temperature and threshold
            onnx = metrics[f"{tier}_deployed"]["onnx"]
            models[-1]["deployed"] = {precision: _scored(blocks) for precision, blocks in onnx.items()}
    if ensemble:
        name = "mean of " + " + ".join(ensemble["members"])
        models.append({"model": name, "evaluate": _job(results, "evaluate_ensemble"), **_scored(ensemble)})
    written = datetime.fromtimestamp((results / "report.html").stat().st_mtime, UTC)
    ledger = test_scorings(results / "test_ledger.csv")
    return {
        "kind": "workflow",
        # Every scoring of the run's test split (results/test_ledger.csv), carried with the record.
        "test_ledger": ledger.to_dict("records"),
        "models": models,
        "recommended": recommended_tier({t: metrics[t] for t in tiers}),
        "tta": metrics[tiers[0]]["tta"],
        "target_sensitivity": metrics[tiers[0]]["target_sensitivity"],
        "config_sha256": config_sha256,
        **time_log(time_log_file),
        **measurement(command, commit, written),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    sel = sub.add_parser("selection", help="a selection table of a workflow run")
    sel.add_argument("--results", type=Path, required=True, help="the run's results/ folder")
    sel.add_argument("--tier", required=True)
    sel.add_argument("--command", required=True, help="the command that produced it, as documented")
    sel.add_argument("--commit", default=None, help="the commit it ran at (default: this checkout's)")
    run = sub.add_parser("workflow", help="a whole run of the workflow, raw data to report")
    run.add_argument("--results", type=Path, required=True, help="the run's results/ folder")
    run.add_argument("--time-log", type=Path, required=True, help="/usr/bin/time -v's output for the run")
    run.add_argument("--command", required=True, help="the command that produced it, as documented")
    for kind in (sel, run):
        kind.add_argument("--out", type=Path, help="where to write it (default: its place under benchmarks/results/)")
    args = parser.parse_args()
    if args.kind == "selection":
        record = record_selection(args.results, args.tier, args.command, args.commit or git_commit(ROOT))
        dest = args.out or ROOT / "benchmarks" / "results" / "selection" / f"{args.tier}.json"
    else:
        record = record_workflow(args.results, args.command, args.time_log)
        dest = args.out or ROOT / "benchmarks" / "results" / "workflow.json"
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
