"""docs/rulegraph.md holds the rule graph Snakemake draws now (``make rulegraph`` writes it)."""

import difflib

import pytest

from skinlesion.rulegraph import EDGE, PAGE, page

pytestmark = pytest.mark.slow  # it runs Snakemake (the DAG, nothing executed)


def test_the_committed_rule_graph_is_what_snakemake_draws_now():
    now, committed = page(), PAGE.read_text()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), now.splitlines(True), "committed", "now"))
    assert now == committed, f"docs/rulegraph.md is stale: run `make rulegraph`\n{diff}"
    graph = now.split("```mermaid\n", 1)[1]
    nodes = {line.strip().split("[")[1].rstrip("]") for line in graph.splitlines() if "[" in line}
    # The default target's stages and the selection target's rules are all drawn.
    assert {"all", "download", "split", "train", "evaluate", "export", "report", "cv_fold", "select"} <= nodes
    edges = [line for line in graph.splitlines() if EDGE.match(line)]
    assert edges == sorted(edges, key=lambda e: tuple(map(int, EDGE.match(e).groups()))[::-1])
