"""The pages state no measurement that no results file holds, and their commands run as written.

Every measured number lives in a results file under benchmarks/results/ and reaches a page through a
rendered block (`python -m skinlesion.rendered`, checked by tests/test_rendered.py). A time, a speed or
a size typed by hand into a page or a comment goes stale unseen, so the prose outside rendered blocks
and code, and the whole text of the configuration files, are scanned for numbers with such units; each
is listed as file:line. Limits and settings are no measurements: a number introduced as one
("≤ 30 min", "within 2 hours", "budget of ...") passes, and so do the few phrases in ``ALLOWED``, each
with its reason. Every documented `snakemake` command must also say how many cores it may use.
"""

import itertools
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SAMPLE, SNAKEMAKE

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


def inline_and_fenced_commands(path: str, first_words: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, command) for each command on a page starting with one of ``first_words``: each line of
    its code blocks (continued lines joined) and each inline code span."""
    text = (ROOT / path).read_text()
    found = []
    for block in re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        first = text.count("\n", 0, block.start(1)) + 1
        for m in re.finditer(r"^(?:.*\\\n)*.*$", block.group(1), flags=re.MULTILINE):
            command = m.group(0).replace("\\\n", " ").strip()
            if command.split(" ", 1)[0] in first_words:
                found.append((first + block.group(1).count("\n", 0, m.start()), command))
    inline = re.sub(r"^```.*?^```", _blank, text, flags=re.DOTALL | re.MULTILINE)
    for m in re.finditer(r"`([^`]+)`", inline):
        command = " ".join(m.group(1).split())
        if command.split(" ", 1)[0] in first_words:
            found.append((inline.count("\n", 0, m.start()) + 1, command))
    return sorted(found)


def snakemake_commands(path: str) -> list[tuple[int, str]]:
    """(line, command) for each `snakemake ...` command on a page ("snakemake ..." names them all)."""
    return [
        (line, c)
        for line, c in inline_and_fenced_commands(path, ("snakemake",))
        if c not in ("snakemake", "snakemake ...")
    ]


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


# A user's own folders in the documented commands, and where the checked copy has them.
USER_PATHS = {
    r"/work3/\$USER": "{tmp}/work3",
    r"(?<=data_dir=)/data/ham10000": "{tmp}/work3/ham10000",
    r"\$PWD": "{project}",
}
# Commands with one of these run as written; the others are dry-run (-n).
RUN_AS_WRITTEN = ("--unlock", "--rulegraph", "--lint", "-n", "--dry-run")
# A deployment method, and the binaries of which one must be on PATH for even a dry run.
DEPLOYMENT_BINARIES = {"conda": ("conda",), "apptainer": ("apptainer", "singularity")}


def documented_project(tmp: Path) -> Path:
    """A copy of the checkout's tracked files in ``tmp/project``, laid out as the pages assume: the
    mirror at ``../shared/data/ham10000``, a `skinlesion mirror` output at ``data/ham10000`` and the
    cluster's data folder, each the bundled sample, and a container image file."""
    import subprocess
    import tarfile

    project = tmp / "project"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(tmp / "tracked.tar", "w") as tar:
        for name in filter(None, files.decode().split("\0")):
            tar.add(ROOT / name, arcname=name, recursive=False)
    with tarfile.open(tmp / "tracked.tar") as tar:
        tar.extractall(project, filter="tar")
    for folder in (tmp / "shared" / "data" / "ham10000", tmp / "work3" / "ham10000", project / "data" / "ham10000"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(SAMPLE, target_is_directory=True)
    (tmp / "work3" / "skinlesion.sif").write_bytes(b"")
    return project


def without_missing_deployment(argv: list[str], project: Path, tmp: Path) -> tuple[list[str], list[str]]:
    """``argv`` without each software deployment whose binary is not on PATH (a profile asking for it
    copied to ``tmp`` without it), and what was dropped: without the binary, Snakemake stops even a
    dry run before it plans anything."""
    import shutil

    missing = {method for method, names in DEPLOYMENT_BINARIES.items() if not any(map(shutil.which, names))}
    out, dropped = [], []
    args = iter(argv)
    for arg in args:
        if (arg == "--use-conda" and "conda" in missing) or (
            arg.startswith("--apptainer-args=") and "apptainer" in missing
        ):
            dropped.append(arg)
        elif arg == "--software-deployment-method":
            method = next(args)
            if method in missing:
                dropped.append(f"{arg} {method}")
            else:
                out += [arg, method]
        elif arg == "--profile":
            name = next(args)
            profile = yaml.safe_load((project / name / "config.yaml").read_text())
            if "conda" in missing and profile.pop("use-conda", False):
                copy = tmp / "profiles" / Path(name).name
                shutil.copytree(project / name, copy, dirs_exist_ok=True)
                (copy / "config.yaml").write_text(yaml.safe_dump(profile))
                dropped.append(f"use-conda of {name}")
                name = str(copy)
            out += [arg, name]
        else:
            out.append(arg)
    return out, dropped


def test_documented_snakemake_commands_run_as_written(tmp_path):
    """Every `snakemake` command of README.md and docs/ runs in a fresh copy of the checkout as a user
    types it there, dry (``-n``) unless it only unlocks, lints or draws the graph, after the
    ``printf ... > run.yaml`` lines the pages give before them. `--report` needs a finished run:
    tests/test_workflow.py runs it. Where conda or Apptainer is missing, a command runs without that
    deployment (and a failure says so): the profile, the targets, the DAG and the configuration are
    still checked."""
    import subprocess
    import sys

    project = documented_project(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commands: dict[str, list[str]] = {}
    for path in PAGES:
        for line in re.findall(r"^printf .*$", (ROOT / path).read_text(), flags=re.MULTILINE):
            subprocess.run(["bash", "-c", line], cwd=project, check=True)
        for line, command in snakemake_commands(path):
            commands.setdefault(command, []).append(f"{path}:{line}")
    failures = []
    for command, where in commands.items():
        here = command.replace("{tier}", "baseline_cnn")
        for user, local in USER_PATHS.items():
            here = re.sub(user, local.format(tmp=tmp_path, project=project), here)
        argv, dropped = without_missing_deployment(shlex.split(here, comments=True)[1:], project, tmp_path)
        if "--report" in argv:
            continue
        if not any(a in RUN_AS_WRITTEN for a in argv):
            argv = ["-n", *argv]
        proc = subprocess.run([*SNAKEMAKE, *argv], cwd=project, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-1500:]
            failures.append(
                f"{', '.join(where)}: {command}\nran: snakemake {shlex.join(argv)}, dropped {dropped}\n{output}"
            )
    assert len(commands) >= 15
    assert not failures, "\n\n".join(failures)


def test_documented_make_targets_exist():
    """Every `make TARGET` on a page names a target of the Makefile."""
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    missing = [
        f"{path}:{line}: {command}"
        for path in PAGES
        for line, command in inline_and_fenced_commands(path, ("make",))
        for word in shlex.split(command, comments=True)[1:2]
        if "=" not in word and word not in targets
    ]
    assert not missing, "no such make target:\n" + "\n".join(missing)


def test_documented_cli_commands_parse():
    """Every `skinlesion ...` command on a page (`[...]` marks optional arguments, given here) is
    accepted by the CLI's own parser: the subcommand and each option exist and take what is given."""
    from skinlesion.cli import build_parser

    parser = build_parser()
    bad = []
    for path in PAGES:
        for line, command in inline_and_fenced_commands(path, ("skinlesion", ".venv/bin/skinlesion", "python")):
            if command.startswith("python") and not command.startswith("python -m skinlesion "):
                continue
            argv = shlex.split(command.replace("[", " ").replace("]", " "), comments=True)
            if argv[0] == "python":
                argv = argv[2:]
            if len(argv) <= 2:
                continue  # "`skinlesion predict`" names a subcommand in prose; its options are checked where given
            try:
                parser.parse_args(argv[1:])
            except SystemExit:
                bad.append(f"{path}:{line}: {command}")
    assert not bad, "the CLI refuses:\n" + "\n".join(bad)


@pytest.mark.slow
def test_documented_benchmark_commands_name_real_options():
    """Every `python benchmarks/NAME.py ...` on a page names a script that exists, and each of its
    options is one that script's --help lists."""
    import subprocess
    import sys

    bad, helps = [], {}
    for path in PAGES:
        for line, command in inline_and_fenced_commands(path, ("python",)):
            if not command.startswith("python benchmarks/"):
                continue
            argv = shlex.split(command, comments=True)
            script = ROOT / argv[1]
            if not script.is_file():
                bad.append(f"{path}:{line}: {argv[1]} does not exist")
                continue
            # a subcommand (record.py's) lists its own options
            words = tuple(itertools.takewhile(lambda a: not a.startswith("-"), argv[2:]))
            if (script, words) not in helps:
                proc = subprocess.run(
                    [sys.executable, str(script), *words, "--help"], capture_output=True, text=True, cwd=ROOT
                )
                helps[script, words] = proc.stdout if proc.returncode == 0 else ""
            usage = helps[script, words]
            options = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")}
            unknown = sorted(o for o in options if not re.search(rf"{re.escape(o)}\b", usage))
            if unknown or not usage:
                bad.append(f"{path}:{line}: {command} (not in its --help: {unknown or 'no --help'})")
    assert not bad, "\n".join(bad)
