"""The pages state no measurement that no results file holds, and their commands run as written.

Every measured number lives in a results file under benchmarks/results/ and reaches a page through a
rendered block (`python -m skinlesion.rendered`, checked by tests/test_rendered.py). A time, a speed or
a size typed by hand into a page or a comment goes stale unseen, so the prose outside rendered blocks
and code, and the whole text of the configuration files, are scanned for numbers with such units; each
is listed as file:line. Limits and settings are no measurements: a number introduced as one
("≤ 30 min", "within 2 hours", "budget of ...") passes, and so do the few phrases in ``ALLOWED``, each
with its reason. Every documented `snakemake` command must also say how many cores it may use.
"""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SAMPLE

NUM = r"(?<![\w.])\d+(?:[.,]\d+)?(?:\s*[-–]\s*\d+(?:[.,]\d+)?)?"
MEASUREMENT = {
    "time": re.compile(rf"{NUM}\s*(?:ms|s|secs?|seconds?|min|mins|minutes?|h|hours?)(?![\w-])"),
    "size": re.compile(rf"{NUM}\s*[KMGT]i?B\b"),
    "throughput": re.compile(r"\b(?:images?|img|requests?|samples?|batches)\s*/\s*s\b", re.IGNORECASE),
    "speed ratio": re.compile(rf"{NUM}\s*[x×](?!\w)"),
}
# Words that make the number after them a limit, not a measurement.
LIMIT = re.compile(r"(?:≤|<=?|\bwithin|\bat most|\bunder|\bbudget(?: of)?|\btimeout(?: of)?|\blimit(?: of)?)\s*$")
# (file, phrase holding the number, why it is no unbacked measurement). Whitespace in a phrase
# matches any whitespace, line breaks included.
ALLOWED = [
    ("README.md", "about 2.8 GB", "the Dataverse files' published size (test_stated_data_sizes_are_the_datas)"),
    ("README.md", "1.4 MB", "the bundled sample's size (test_stated_data_sizes_are_the_datas)"),
    ("docs/reproducibility.md", "4 GB, 60 min", "profiles/dtu-lsf's default job resources (settings)"),
]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
CONFIGS = [
    "workflow_config.yaml",
    "schemas/config.schema.yaml",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "profiles").rglob("*.yaml")),
]
# Pages that still hold hand-typed measurements; strict, so the mark must go once they hold none.
PENDING: dict[str, str] = {}


def _blank(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(text: str) -> str:
    """A page with its rendered blocks, fenced code and inline code blanked out (line numbers kept):
    commands carry settings, and rendered blocks come from results files."""
    text = re.sub(r"<!-- rendered from .*?<!-- end rendered -->", _blank, text, flags=re.DOTALL)
    text = re.sub(r"^```.*?^```", _blank, text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`]*`", _blank, text)


def unbacked_measurements(path: str, text: str | None = None) -> list[str]:
    """``file:line: number (kind)`` for each measurement-like number in ``path`` (or in ``text``,
    named ``path``) that is no limit and no ``ALLOWED`` phrase."""
    if text is None:
        text = (ROOT / path).read_text()
    if path.endswith(".md"):
        text = prose(text)
    allowed = [
        m.span()
        for file, phrase, _ in ALLOWED
        if file == path
        for m in re.finditer(r"\s+".join(map(re.escape, phrase.split())), text)
    ]
    hits = []
    for kind, pattern in MEASUREMENT.items():
        for m in pattern.finditer(text):
            before = " ".join(text[max(0, m.start() - 40) : m.start()].split())
            if LIMIT.search(before) or any(a <= m.start() and m.end() <= b for a, b in allowed):
                continue
            line = text.count("\n", 0, m.start()) + 1
            hits.append((m.start(), f"{path}:{line}: {' '.join(m.group(0).split())!r} ({kind})"))
    return [hit for _, hit in sorted(hits)]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.xfail(strict=True, reason=PENDING[path])) if path in PENDING else path
        for path in PAGES + CONFIGS
    ],
)
def test_no_hand_typed_measurements(path):
    hits = unbacked_measurements(path)
    assert not hits, (
        "measurements that no results file holds (render them from benchmarks/results/, point to "
        "docs/benchmarks.md, or drop them):\n" + "\n".join(hits)
    )


def snakemake_commands(path: str) -> list[tuple[int, str]]:
    """(line, command) for each `snakemake ...` command on a page: in its code blocks (continued
    lines joined) and in its inline code."""
    text = (ROOT / path).read_text()
    commands = []
    for block in re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        first = text.count("\n", 0, block.start(1)) + 1
        for m in re.finditer(r"^snakemake (?:.*\\\n)*.*$", block.group(1), flags=re.MULTILINE):
            line = first + block.group(1).count("\n", 0, m.start())
            commands.append((line, m.group(0).replace("\\\n", " ")))
    inline = re.sub(r"^```.*?^```", _blank, text, flags=re.DOTALL | re.MULTILINE)
    for m in re.finditer(r"`(snakemake [^`]*)`", inline):
        commands.append((inline.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())))
    return sorted(c for c in commands if c[1] != "snakemake ...")  # "snakemake ..." names them all


# Pages whose commands still stop for want of --cores; strict, so the mark must go once they run.
PENDING_CORES: dict[str, str] = {}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.xfail(strict=True, reason=PENDING_CORES[path]))
        if path in PENDING_CORES
        else path
        for path in PAGES
    ],
)
def test_documented_snakemake_commands_say_how_many_cores(path):
    """Outside a dry run, Snakemake stops at once without --cores (or a profile that sets it): the
    train and evaluate rules take workflow.cores threads. --unlock and --report included."""
    from snakemake.cli import get_argument_parser

    missing = []
    for line, command in snakemake_commands(path):
        args = get_argument_parser().parse_args(shlex.split(command, comments=True)[1:])
        if not (args.cores or args.jobs or args.profile or args.dryrun or args.lint):
            missing.append(f"{path}:{line}: {command}")
    assert not missing, "add --cores N:\n" + "\n".join(missing)


def test_the_scan_finds_what_it_should():
    """The patterns catch the usual forms of a measurement and pass limits and commands."""
    page = (
        "Each epoch took 40 s. 86 s per epoch, 99 images/s, peak 3,190 MB, 2.5-3x faster, 13 min 0 s.\n"
        "Each tier ≤ 30 min, the run within\n2 hours. `--duration 30s` in a command, a 200x150 mirror.\n"
        "<!-- rendered from benchmarks/results/x.json -->\n17.6 s per epoch\n<!-- end rendered -->\n"
    )
    hits = unbacked_measurements("docs/probe.md", page)
    found = [hit.split(": ", 1)[1] for hit in hits]
    assert found == [
        "'40 s' (time)",
        "'86 s' (time)",
        "'images/s' (throughput)",
        "'3,190 MB' (size)",
        "'2.5-3x' (speed ratio)",
        "'13 min' (time)",
        "'0 s' (time)",
    ]
    assert all(hit.startswith("docs/probe.md:1: ") for hit in hits)


def test_stated_data_sizes_are_the_datas():
    """The two data sizes the README states (ALLOWED) match the data they describe."""
    readme = (ROOT / "README.md").read_text()
    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    dataverse = sum(spec["size"] for spec in config["files"].values())
    assert f"about {dataverse / 1e9:.1f} GB" in readme
    sample = sum(f.stat().st_size for f in Path(SAMPLE).iterdir() if f.is_file())
    assert f"{sample / 1e6:.1f} MB" in readme
