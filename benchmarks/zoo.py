"""The registry zoo: every flow against every emulated public registry, per registry.

Runs :func:`aociauth.testing.zoo.run_zoo` through both adapters, the aiohttp
middleware and the httpx ``RegistryAuth`` (the same flows as ``python -m
aociauth.testing.zoo`` and ``tests/test_testing_zoo.py``) and tabulates, per
registry, the flows passed, the registry's 401 answers, the requests to its
token endpoint, what the audit of every request found (leaks) and the flows
that failed. It is a count, not a timing, so ``--quick`` changes nothing.
"""

from __future__ import annotations

import tempfile

from aociauth.testing.zoo import PROFILES, run_zoo, summarize

from ._common import Report, Table, run_async

NAME = "zoo"
TITLE = "Registry zoo"


def run(quick: bool) -> Report:
    """Run every flow against every registry of the zoo; one row per registry."""
    with tempfile.TemporaryDirectory(prefix="aociauth-zoo-") as workdir:
        outcomes = run_async(run_zoo(workdir, PROFILES, ("aiohttp", "httpx")))
    table = Table(
        "Flows per registry (401s and token requests summed over its flows)",
        ("registry", "flows passed", "401s", "token requests", "leaks", "failures"),
    )
    for r in summarize(outcomes, PROFILES):
        table.add(
            r.registry,
            f"{r.passed}/{r.flows}",
            r.unauthorized,
            r.token_requests,
            r.leaks,
            ", ".join(r.failures) or "-",
        )
    report = Report(NAME, TITLE, [table])
    for o in outcomes:
        if not o.passed:
            report.notes.append(f"{o.registry} {o.flow}: {o.known_issue or o.detail}")
    return report
