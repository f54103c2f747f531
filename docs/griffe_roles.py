"""A griffe extension for the API reference: reStructuredText roles read as Markdown.

aociauth's docstrings are written for ``help()`` and IDEs, in the reStructuredText habit:
``:class:`TokenServer```, ``:meth:`x```, a paragraph ending in ``::`` before an indented
example. mkdocstrings renders docstrings as Markdown, where a role would show as
``:class:`` followed by a code span; this turns each role into the code span alone, and
a closing ``::`` into ``:`` (the indented example is a Markdown code block as it is).
The docstrings themselves are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj|const|py:\w+):`~?([^`]+)`")
_LITERAL_INTRO = re.compile(r"(?<=\S)::$", re.MULTILINE)


def markdown_of(text: str) -> str:
    """The docstring ``text`` with its roles as code spans and ``::`` intros as ``:``."""
    return _LITERAL_INTRO.sub(":", _ROLE.sub(r"`\1`", text))


class RolesAsCode(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`markdown_of`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for each module, class, function and attribute it loads."""
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
