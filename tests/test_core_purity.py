"""The core is I/O-free: read from its source (ast), not trusted from its docstring.

The modules of ``aociauth/core`` and every ``aociauth`` module they import,
transitively, must not import an I/O or event-loop library, the clock, or open
a file. Imports under ``if TYPE_CHECKING:`` are for the type checker alone and
do not count (``aociauth.core.flow`` names ``aociauth.config.ConfigEntry`` so).

One documented exception: :mod:`aociauth.errors` imports aiohttp, so that the
errors of a request through the middleware are ``aiohttp.ClientError`` s. The
core builds those exceptions as values and returns them; it never raises them
into I/O.

What this does not cover: third-party modules are not walked (``yarl``,
``publicsuffixlist``: the latter reads its bundled list file once, lazily, when
the realm policy first needs a registrable domain), and importing
``aociauth.core`` at run time executes the package's ``__init__``, which
imports the middleware; the core's own modules never import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import aociauth

PACKAGE = Path(aociauth.__file__).parent
CORE = sorted(f"aociauth.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py"))
CORE = [m.removesuffix(".__init__") for m in CORE]

FORBIDDEN = {
    "aiohttp",
    "anyio",
    "asyncio",
    "httpx",
    "sniffio",
    "socket",
    "time",
    # and their kin: none has a place in a core that decides
    "http.client",
    "io",
    "os",
    "pathlib",
    "selectors",
    "shutil",
    "ssl",
    "subprocess",
    "tempfile",
    "threading",
    "urllib.request",
}
#: module -> the forbidden imports it may have, and why.
EXCEPTIONS = {
    "aociauth.errors": {"aiohttp"},  # errors of requests are aiohttp.ClientErrors
}
#: Calls that read a clock or the outside world; ``open`` anywhere in the closure.
CLOCK_CALLS = {
    "time",
    "monotonic",
    "perf_counter",
    "now",
    "utcnow",
    "today",
    "random",
    "getrandbits",
    "urandom",
}


def source_path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    pkg = PACKAGE / rel / "__init__.py"
    return pkg if pkg.exists() else (PACKAGE / rel).with_suffix(".py")


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> tuple[set[str], set[str]]:
    """``(runtime, type_only)``: the absolute names ``module`` imports."""
    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    package = module if source_path(module).name == "__init__.py" else module.rpartition(".")[0]
    runtime: set[str] = set()
    type_only: set[str] = set()

    def names(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
            return
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base]) if base else ".".join(parts)
        yield base
        for a in node.names:  # ``from pkg import module`` imports a module too
            yield f"{base}.{a.name}"

    def walk(node: ast.AST, into: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child.test):
                for stmt in child.body:
                    walk_stmt(stmt, type_only)
                for stmt in child.orelse:
                    walk_stmt(stmt, into)
                continue
            walk_stmt(child, into)

    def walk_stmt(node: ast.AST, into: set[str]) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            into.update(names(node))
        else:
            walk(node, into)

    walk(tree, runtime)
    return runtime, type_only


def is_module(name: str) -> bool:
    return name.startswith("aociauth.") and source_path(name).exists()


def closure() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every aociauth module the core imports at run time, with its imports;
    and the type-only imports met on the way."""
    seen: dict[str, set[str]] = {}
    type_only: dict[str, set[str]] = {}
    todo = list(CORE)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        runtime, typed = imports(module)
        seen[module] = runtime
        type_only[module] = typed
        todo += [n for n in runtime if is_module(n)]
    return seen, type_only


def hits(names: set[str]) -> set[str]:
    return {n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}


def test_the_closure_is_what_we_think() -> None:
    seen, _ = closure()
    assert set(CORE) <= set(seen)
    assert "aociauth.core.flow" in seen
    # What the core stands on (a new module here deserves a look).
    assert set(seen) - set(CORE) == {
        "aociauth._addresses",
        "aociauth._redact",
        "aociauth._reference",
        "aociauth._urls",
        "aociauth.challenge",
        "aociauth.errors",
        "aociauth.inference",
        "aociauth.realm",
        "aociauth.scope",
        "aociauth.stats",
        "aociauth.tokens",
    }
    for names in seen.values():
        assert "aociauth" not in names  # the package __init__ imports the middleware


def test_no_module_of_the_closure_imports_io_or_a_loop() -> None:
    seen, _ = closure()
    found = {m: hits(names) - EXCEPTIONS.get(m, set()) for m, names in seen.items()}
    assert {m: h for m, h in found.items() if h} == {}


def test_the_exception_is_still_needed() -> None:
    # If errors.py stops importing aiohttp, the exception goes too.
    seen, _ = closure()
    for module, allowed in EXCEPTIONS.items():
        assert hits(seen[module]) == allowed


def test_type_only_imports_stay_type_only() -> None:
    seen, type_only = closure()
    # flow.py names ConfigEntry for the type checker; config.py does I/O (files,
    # helpers on asyncio) and must not become a run-time import of the core.
    assert "aociauth.config" in type_only["aociauth.core.flow"]
    assert "aociauth.config" not in seen
    assert hits(imports("aociauth.config")[0])  # why it matters


def calls(module: str) -> Iterator[tuple[str, int]]:
    """``(name, line)`` of every call to a bare name or an attribute."""
    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                yield f.id, node.lineno
            elif isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else "?"
                yield f"{base}.{f.attr}", node.lineno


def test_no_module_of_the_closure_opens_a_file() -> None:
    seen, _ = closure()
    opened = [
        (m, name, line)
        for m in seen
        for name, line in calls(m)
        if name in ("open", "io.open", "os.open")
        or name.endswith((".read_text", ".read_bytes", ".write_text", ".open"))
    ]
    assert opened == []


@pytest.mark.parametrize("module", CORE)
def test_the_core_reads_no_clock(module: str) -> None:
    clock = [
        (name, line)
        for name, line in calls(module)
        if name.startswith(("time.", "datetime.", "date.", "random.", "os."))
        or name.rpartition(".")[2] in CLOCK_CALLS
    ]
    assert clock == []
    text = source_path(module).read_text(encoding="utf-8")
    assert "datetime.now" not in text
    assert "time.time" not in text
    assert "time.monotonic" not in text


def test_the_checker_sees_what_it_looks_for() -> None:
    # The checks above cannot fail if the walker is blind: show it catches a forbidden
    # import, a relative import, a TYPE_CHECKING import and a clock call where they are.
    runtime, _ = imports("aociauth.middleware")
    assert {"asyncio", "time", "aiohttp"} <= hits(runtime)
    assert "aociauth.scope" in imports("aociauth.inference")[0]  # ``from .scope import``
    assert "aociauth.config" in imports("aociauth._trace")[1]
    assert "time.time" in {name for name, _ in calls("aociauth.middleware")}
