"""Numbers in the docs come from the files the measurements wrote, never from typing.

A Markdown file marks each rendered block with the results file it comes from::

    <!-- rendered from benchmarks/results/selection/baseline_cnn.json -->
    ... (generated text) ...
    <!-- end rendered -->

``python -m skinlesion.rendered README.md docs/*.md`` regenerates every such block from its file;
``--check`` exits non-zero, naming the block, where the text differs from what its file says (a
test runs it). A results file is JSON with a ``kind`` that picks its renderer; every kind records
the command, hardware, date and commit of its measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from skinlesion.io import atomic_path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- rendered from (\S+) -->\n)(.*?)(<!-- end rendered -->)", re.DOTALL)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}"


def _signed(mean: float, sd: float) -> str:
    return f"{mean:+.3f} ± {sd:.3f}"


def adopt(delta_bal: tuple[float, float], delta_auroc: tuple[float, float], k: int) -> bool:
    """The selection rule of docs/evaluation.md: a variant replaces the default only if its mean paired
    difference in balanced accuracy exceeds one standard error and its malignant AUROC does not fall
    by more than one standard error."""
    (bal, bal_sd), (auroc, auroc_sd) = delta_bal, delta_auroc
    return bal > bal_sd / math.sqrt(k) and auroc >= -auroc_sd / math.sqrt(k)


def selection(record: dict) -> str:
    """A cross-validation comparison (``benchmarks/record.py selection``): one row per variant."""
    rows = record["rows"]
    k = record["folds"]
    stat = {(r["variant"], r["fold"]): r for r in rows if r["fold"] in ("mean", "sd")}
    lines = [
        "| variant | settings | balanced accuracy | malignant AUROC | Δ balanced accuracy | Δ malignant AUROC "
        "| Δ per fold (bal. acc.) | replaces the default? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mean, sd = stat[variant, "mean"], stat[variant, "sd"]
        folds = [r for r in rows if r["variant"] == variant and r["fold"] not in ("mean", "sd")]
        settings = ", ".join(f"`{key}: {json.dumps(v)}`" for key, v in record["variants"].get(variant, {}).items())
        cells = [
            variant,
            settings or "the tier's defaults",
            _pm(mean["balanced_accuracy"], sd["balanced_accuracy"]),
            _pm(mean["malignant_auroc"], sd["malignant_auroc"]),
        ]
        if variant == "default":
            cells += ["—", "—", "—", "—"]
        else:
            deltas = [(mean[f"delta_{m}"], sd[f"delta_{m}"]) for m in ("balanced_accuracy", "malignant_auroc")]
            cells += [_signed(*deltas[0]), _signed(*deltas[1])]
            cells.append(" ".join(f"{f['delta_balanced_accuracy']:+.3f}" for f in folds))
            cells.append("yes" if adopt(*deltas, k) else "no")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{record['tier']}, {k} lesion-grouped folds of the development data, mean ± sd over folds, per image; "
        f"Δ: paired difference from the default on the same fold. `{record['command']}`, {record['hardware']}, "
        f"commit {record['commit'][:10]}, {record['date']}; {record['trainings']} trainings in "
        f"{record['wall_minutes']:.0f} min of wall time."
    )
    return "\n".join(lines) + "\n"


RENDERERS = {"selection": selection}


def render_block(source: str, root: Path = ROOT) -> str:
    path = root / source
    if not path.is_file():
        raise FileNotFoundError(f"rendered block: its source {source} does not exist")
    record = json.loads(path.read_text())
    if record.get("kind") not in RENDERERS:
        raise ValueError(f"{source}: kind {record.get('kind')!r} has no renderer; known: {sorted(RENDERERS)}")
    return RENDERERS[record["kind"]](record)


def render_text(text: str, root: Path = ROOT) -> str:
    """``text`` with every rendered block regenerated from its source file."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), root) + m.group(4), text)


def stale_blocks(path: Path, root: Path = ROOT) -> list[str]:
    """The sources of the blocks of ``path`` whose text differs from what their files say."""
    text = path.read_text()
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(3) != render_block(m.group(2), root)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the docs' measured tables from their results files.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; fail where a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        if args.check:
            stale += [f"{path}: block from {source}" for source in stale_blocks(path)]
        else:
            text = render_text(path.read_text())
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    for line in stale:
        print(f"stale: {line} (run python -m skinlesion.rendered {path})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
