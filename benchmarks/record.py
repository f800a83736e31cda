"""Record a finished measurement as a results file under benchmarks/results/, which the docs render from.

    python benchmarks/record.py selection --results RESULTS_DIR --tier baseline_cnn \\
        --command "snakemake --cores 2 results/selection/baseline_cnn.csv --config data_dir=..."

``selection``: the selection table ``RESULTS_DIR/selection/{tier}.csv`` of a workflow run, with the
variants' settings (from workflow_config.yaml), the number of trainings and their summed wall time
(the cv_fold and select jobs' Snakemake benchmark files), the hardware, the date the table was
written and the commit (``--commit``, default the checkout's). Writes
``benchmarks/results/selection/{tier}.json``; then ``python -m skinlesion.rendered README.md docs/*.md``.
"""

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from skinlesion.config import load_config
from skinlesion.io import atomic_path
from skinlesion.provenance import git_commit, measurement

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    sel = sub.add_parser("selection", help="a selection table of a workflow run")
    sel.add_argument("--results", type=Path, required=True, help="the run's results/ folder")
    sel.add_argument("--tier", required=True)
    sel.add_argument("--command", required=True, help="the command that produced it, as documented")
    sel.add_argument("--commit", default=None, help="the commit it ran at (default: this checkout's)")
    args = parser.parse_args()
    record = record_selection(args.results, args.tier, args.command, args.commit or git_commit(ROOT))
    dest = ROOT / "benchmarks" / "results" / "selection" / f"{args.tier}.json"
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
