"""The command line's help is plain text: no reStructuredText or Markdown markup from the docstrings."""

import argparse
import subprocess
import sys

from skinlesion.cli import build_parser, plain


def test_markup_is_stripped():
    text = "Command line: ``skinlesion <command>``, :func:`skinlesion.cli.main`, `serve` and **this**; a-b: c."
    assert plain(text) == "Command line: skinlesion <command>, skinlesion.cli.main, serve and this; a-b: c."


def test_every_help_page_is_plain_text():
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    pages = {"skinlesion": parser.format_help()}
    pages |= {f"skinlesion {name}": sub.format_help() for name, sub in subparsers.choices.items()}
    assert set(pages) == {"skinlesion", *(f"skinlesion {name}" for name in subparsers.choices)}
    marked = {name: page for name, page in pages.items() if "`" in page or "**" in page or ":func:" in page}
    assert not marked, marked
    assert "Command line: skinlesion <command> or python -m skinlesion <command>." in pages["skinlesion"]
    assert "URL of a running skinlesion serve" in pages["skinlesion app"]


def test_the_installed_command_prints_it():
    done = subprocess.run([sys.executable, "-m", "skinlesion", "--help"], capture_output=True, text=True, check=True)
    assert "`" not in done.stdout and "predict" in done.stdout
