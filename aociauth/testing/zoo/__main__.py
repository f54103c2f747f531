"""``python -m aociauth.testing.zoo``: run every flow against every emulated registry.

Prints one row per registry: flows passed, the registry's 401s, requests to
its token endpoint, audit findings (leaks) and the flows that failed (those
an open issue explains are marked). ``--registry KEY`` (repeatable) picks
registries, ``--adapter httpx`` (or ``both``) drives the flows through
:class:`aociauth.httpx.RegistryAuth` instead of (or as well as) the aiohttp
middleware, ``--json`` prints every outcome instead. The exit status is 1
when a flow failed that no open issue explains, or when the audit found
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile

from aociauth.testing.zoo.flows import format_table, outcomes_as_json, run_zoo, summarize
from aociauth.testing.zoo.profiles import PROFILES


def main(argv: list[str] | None = None) -> int:
    """Run the zoo and print the report; return the exit status."""
    keys = [p.key for p in PROFILES]
    parser = argparse.ArgumentParser(prog="python -m aociauth.testing.zoo", description=__doc__)
    parser.add_argument("--registry", action="append", choices=keys, help="registry to run")
    parser.add_argument(
        "--adapter",
        choices=("aiohttp", "httpx", "both"),
        default="aiohttp",
        help="which client drives the flows (default: the aiohttp middleware)",
    )
    parser.add_argument("--json", action="store_true", help="print every outcome as JSON")
    args = parser.parse_args(argv)
    chosen = [p for p in PROFILES if not args.registry or p.key in args.registry]
    with tempfile.TemporaryDirectory(prefix="aociauth-zoo-") as workdir:
        adapters = ("aiohttp", "httpx") if args.adapter == "both" else (args.adapter,)
        outcomes = asyncio.run(run_zoo(workdir, chosen, adapters))
    if args.json:
        print(json.dumps(outcomes_as_json(outcomes), indent=2))
    else:
        print(format_table(summarize(outcomes, chosen)))
        for o in outcomes:
            if not o.passed or o.leaks:
                why = f" [{o.known_issue}]" if o.known_issue else ""
                print(f"- {o.registry} {o.flow}: {o.detail}{why}")
                for leak in o.leaks:
                    print(f"  leak: {leak}")
    unexplained = [o for o in outcomes if (not o.passed and not o.known_issue) or o.leaks]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
