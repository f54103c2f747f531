"""An mkdocs hook: the command line reference's ``--help`` texts, from the parser itself.

``docs/api/cli.md`` holds the marker ``<!-- aociauth --help -->``; at build time it
becomes the help of ``aociauth`` and of each subcommand, as ``aociauth.cli.build_parser``
prints it, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

MARKER = "<!-- aociauth --help -->"


def _help(parser: argparse.ArgumentParser) -> str:
    # argparse wraps at the terminal's width; the page's is fixed.
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def help_markdown() -> str:
    """Markdown for the help of ``aociauth`` and of each of its subcommands, in order."""
    from aociauth.cli import build_parser

    parser = build_parser()
    sections = [f"## aociauth\n\n```text\n{_help(parser)}```\n"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append(f"## aociauth {name}\n\n```text\n{_help(sub)}```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    """Replace the marker on the page that has it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, help_markdown())
