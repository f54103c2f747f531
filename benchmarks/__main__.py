"""``python -m benchmarks [--quick] [SCENARIO ...]``: run the scenarios, print their tables."""

from __future__ import annotations

import argparse
import importlib
import logging
import platform
import sys
import time
from types import ModuleType

import aiohttp

import aociauth

from ._common import RESULTS_DIR, Report

#: Scenario modules, in the order they run.
MODULES = (
    "overhead",
    "instructions",
    "cold_burst",
    "fanout",
    "sequence",
    "cache",
    "reference",
    "shared_cache",
    "zoo",
    "redirect_hosts",
    "coalesce",
    "picky",
)


def _scenarios() -> dict[str, ModuleType]:
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(f"benchmarks.{module_name}")
        found[module.NAME] = module
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios asked for (all by default) and write results/summary.md."""
    scenarios = _scenarios()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="aociauth benchmarks: tables on stdout, PNG plots and summary.md in "
        f"{RESULTS_DIR}.",
    )
    parser.add_argument(
        "scenario",
        nargs="*",
        metavar="SCENARIO",
        help=f"which to run (default: all): {', '.join(scenarios)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and points (a few minutes on 2 cores)"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenario if name not in scenarios]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(scenarios)}")
    chosen = args.scenario or list(scenarios)
    logging.basicConfig(level=logging.WARNING)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    command += "".join(f" {name}" for name in args.scenario)
    header = (
        f"aociauth {aociauth.__version__}, aiohttp {aiohttp.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print(f"{command}\n{header}\n", flush=True)
    reports: list[Report] = []
    for name in chosen:
        started = time.perf_counter()
        report: Report = scenarios[name].run(args.quick)
        report.seconds = time.perf_counter() - started
        reports.append(report)
        print(report.text(), end="\n\n", flush=True)
    summary = RESULTS_DIR / "summary.md"
    body = "\n\n".join(r.markdown() for r in reports)
    summary.write_text(f"# aociauth benchmarks\n\n`{command}`: {header}\n\n{body}\n")
    print(f"written: {summary.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
