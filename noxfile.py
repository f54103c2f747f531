"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s docs``,
``nox -s bench``, ``nox -s mutants``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "aociauth")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with ``mkdocs build --strict``.

    Strict: a broken link or anchor, a page missing from the navigation or a
    docstring griffe cannot read fails the build. ``nox -s docs -- serve``
    serves it instead, rebuilt on every change.
    """
    session.install("-e", ".[docs]")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks: they print tables and write PNG plots to benchmarks/results/."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing of the I/O-free core (mutmut; settings in pyproject's [tool.mutmut]).

    Every mutant of ``aociauth/core`` runs against the core's unit tests; the
    survivors are listed (docs/mutants.md explains each) and the session fails
    below 90 % killed. ``nox -s mutants -- NAME...`` reruns some mutants only.
    """
    session.install("-e", ".[dev]")
    session.run("mutmut", "run", "--max-children", "2", *session.posargs)
    session.run("mutmut", "results")
    session.run("mutmut", "export-cicd-stats")
    session.run("python", "-c", _MUTATION_SCORE)


# mutmut's own score: (killed + timeout) / (total - skipped).
_MUTATION_SCORE = """
import json, sys
s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["total"] - s.get("skipped", 0)
killed = s["killed"] + s.get("timeout", 0)
print(f"mutation score: {killed}/{tested} killed = {100 * killed / tested:.1f} %")
sys.exit(killed < 0.9 * tested)
"""
