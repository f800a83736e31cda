"""The workflow's rule graph, drawn by Snakemake itself, in docs/rulegraph.md.

``python -m skinlesion.rulegraph`` (``make rulegraph``) runs ``snakemake --rulegraph mermaid-js``
with the bundled sample's configuration (``profiles/sample/sample.yaml``) for the default target and
every tier's selection target, in a scratch working directory (nothing runs, nothing is written to the
checkout), and writes the graph into the page as a Mermaid block, which GitHub renders. ``--check``
changes nothing and exits non-zero where the page differs from what Snakemake draws now
(tests/test_rulegraph.py runs it), so a new rule or a changed dependency fails until the page is
regenerated. Snakemake lists the edges in an order that varies between runs, so they are sorted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "rulegraph.md"
SAMPLE_CONFIG = "profiles/sample/sample.yaml"
EDGE = re.compile(r"^\s*id(\d+) --> id(\d+)$")


def targets() -> list[str]:
    """The default target and each configured tier's selection table."""
    from skinlesion.config import load_config

    return ["all", *(f"results/selection/{tier}.csv" for tier in load_config()["train"]["tiers"])]


def command() -> list[str]:
    """The Snakemake command, as the page shows it (run from the checkout's root)."""
    return ["snakemake", "--cores", "2", "--configfile", SAMPLE_CONFIG, "--rulegraph", "mermaid-js", *targets()]


def mermaid() -> str:
    """Snakemake's Mermaid rule graph, its edges sorted (by target, then source)."""
    with tempfile.TemporaryDirectory() as workdir:
        args = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", workdir]
        args += command()[1:] + ["--config", f"data_dir={ROOT / 'data' / 'sample'}"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake --rulegraph failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip("\n").splitlines()
    edges = sorted(
        (line for line in lines if EDGE.match(line)), key=lambda e: tuple(map(int, EDGE.match(e).groups()))[::-1]
    )
    return "\n".join([line for line in lines if not EDGE.match(line)] + edges) + "\n"


def page() -> str:
    """docs/rulegraph.md as Snakemake draws the graph now."""
    shown = " ".join(command())
    return (
        "# The workflow's rule graph\n\n"
        "<!-- Written by `python -m skinlesion.rulegraph` (`make rulegraph`); do not edit.\n"
        "tests/test_rulegraph.py fails when it differs from what Snakemake draws. -->\n\n"
        "Every rule of the workflow, with an arrow from each rule to the rules that read its outputs:\n"
        "the default target (`all`: the report, the exports and their model cards) and the selection\n"
        "targets (`results/selection/{tier}.csv`), with the bundled sample's configuration (no external\n"
        "test set). Drawn by Snakemake:\n\n"
        f"```bash\n{shown}\n```\n\n"
        "Regenerate this page with `make rulegraph` after adding a rule or changing what a rule reads.\n"
        "Stages, rules and outputs: [workflow.md](workflow.md).\n\n"
        f"```mermaid\n{mermaid()}```\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the workflow's rule graph, drawn by Snakemake, to a page.")
    parser.add_argument("page", nargs="?", type=Path, default=PAGE, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="change nothing; fail where the page is stale")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        if not args.page.is_file() or args.page.read_text() != text:
            print(f"stale: {args.page} (run python -m skinlesion.rulegraph or make rulegraph)", file=sys.stderr)
            return 1
        return 0
    from skinlesion.io import atomic_path

    with atomic_path(args.page) as tmp:
        tmp.write_text(text)
    print(args.page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
