"""A fake ``docker-credential-*`` helper whose answer the test sets per registry host.

Credential helpers are programs (docker/docker-credential-helpers): the
server URL on standard input, a JSON object on standard output. A test of
code that runs them wants one that answers what the test says, can fail,
print noise, stall or hang the way real ones do, and counts its runs.
:func:`install_credential_helper` writes one into a directory of the test's
own (never on this process's ``PATH``), answering from a table of
:class:`HelperAnswer` keyed by host::

    helper = install_credential_helper(tmp_path, {"reg.test": HelperAnswer("alice", "pw")})
    config = helper.config({f"reg.test:{port}": helper.name})
    ...
    assert len(helper.runs()) == 1

The helper is a Python script run by this interpreter; it reads the table on
every run, so :meth:`FakeHelper.set_answer` changes what the next run says.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import aociauth
from aociauth.helpers import exec_helper_with_env

__all__ = ["NOT_FOUND", "FakeHelper", "HelperAnswer", "install_credential_helper"]


@dataclass(frozen=True)
class HelperAnswer:
    """What the fake helper does for one host.

    By default it answers ``{"ServerURL", "Username", "Secret"}``. ``stdout``
    replaces that answer with exactly this text (noise, a malformed answer);
    ``stderr`` and ``exit_code`` make a failing run. ``wait_for_gate`` holds
    the answer until :meth:`FakeHelper.open_gate` (a slow helper a test lines
    requests up behind); ``hang`` never answers (a helper waiting for a person).
    """

    username: str = ""
    secret: str = ""
    stdout: str | None = None
    stderr: str = ""
    exit_code: int = 0
    wait_for_gate: bool = False
    hang: bool = False


NOT_FOUND = HelperAnswer(stdout="credentials not found in native keychain\n", exit_code=1)
"""A real helper's answer for a server it has no credentials for (the fake's for unknown hosts)."""

_SCRIPT = """#!{python}
import json, os, sys, time
url = sys.stdin.read()
with open(os.environ["FAKE_HELPER_RUNS"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "url": url}}) + "\\n")
with open(os.environ["FAKE_HELPER_ANSWERS"]) as table:
    answers = json.load(table)
host = url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
a = answers.get(url) or answers.get(host) or answers["*"]
if a["hang"]:
    time.sleep(600)
while a["wait_for_gate"] and not os.path.exists(os.environ["FAKE_HELPER_GATE"]):
    time.sleep(0.01)
if a["stdout"] is None:
    answer = {{"ServerURL": url, "Username": a["username"], "Secret": a["secret"]}}
    sys.stdout.write(json.dumps(answer))
else:
    sys.stdout.write(a["stdout"])
sys.stderr.write(a["stderr"])
sys.exit(a["exit_code"])
"""


@dataclass(frozen=True)
class FakeHelper:
    """An installed fake: ``docker-credential-NAME`` in a directory only :attr:`env` has on PATH.

    Run it through :meth:`config` (or :func:`aociauth.exec_helper_with_env`
    with :attr:`env`); :meth:`runs` lists every run it made.
    """

    name: str
    env: Mapping[str, str]
    directory: Path

    @property
    def gate(self) -> Path:
        """The file whose existence lets ``wait_for_gate`` answers go."""
        return Path(self.env["FAKE_HELPER_GATE"])

    def open_gate(self) -> None:
        """Let every run held by ``wait_for_gate`` answer."""
        self.gate.touch()

    def set_answer(self, host: str, answer: HelperAnswer) -> None:
        """From the next run on, answer ``answer`` for ``host`` (a host name, or a whole URL)."""
        table_file = Path(self.env["FAKE_HELPER_ANSWERS"])
        table = json.loads(table_file.read_text())
        table[host] = asdict(answer)
        table_file.write_text(json.dumps(table))

    def runs(self) -> list[dict[str, object]]:
        """Every run so far, oldest first: ``{"argv": [...], "url": <its standard input>}``."""
        runs_file = Path(self.env["FAKE_HELPER_RUNS"])
        if not runs_file.exists():
            return []
        return [json.loads(line) for line in runs_file.read_text().splitlines()]

    def config(
        self, cred_helpers: Mapping[str, str], timeout: float = 10.0, **doc: object
    ) -> aociauth.ConfigFile:
        """A config whose ``credHelpers`` are ``cred_helpers`` (and other keys ``doc``).

        Its helpers run with :attr:`env` (so this helper is found) and ``timeout``.
        """
        runner = exec_helper_with_env(self.env, timeout=timeout)
        document = {"credHelpers": dict(cred_helpers), **doc}
        return aociauth.ConfigFile.from_dict(document, runner=runner)


def install_credential_helper(
    directory: Path,
    answers: Mapping[str, HelperAnswer],
    *,
    name: str = "fake",
    otherwise: HelperAnswer = NOT_FOUND,
) -> FakeHelper:
    """Write ``docker-credential-NAME`` into ``directory/bin``, answering ``answers``.

    ``answers`` maps a host name (the server URL without scheme, path or
    port) or a whole server URL to what to do; any other gets ``otherwise``.
    ``directory`` should be the test's own (``tmp_path``): the helper keeps
    its table, its run log and its gate there.
    """
    bindir = directory / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text(_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    table = {host: asdict(answer) for host, answer in answers.items()}
    table["*"] = asdict(otherwise)
    table_file = directory / f"{name}-answers.json"
    table_file.write_text(json.dumps(table))
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.defpath}",
        "FAKE_HELPER_RUNS": str(directory / f"{name}-runs.log"),
        "FAKE_HELPER_ANSWERS": str(table_file),
        "FAKE_HELPER_GATE": str(directory / f"{name}-gate"),
    }
    return FakeHelper(name, env, directory)
