"""Every fenced code block of README.md and docs/ runs, or says why it cannot.

The rule, also in the README's "Development" and in docs/contributing.md:

* A block is a **fragment** when the line right before its opening fence is an
  HTML comment ``<!-- fragment: WHY -->`` (the reason is required). It is not
  run. The comment shows neither on GitHub nor on the site.
* Every other block is checked by its language:

  - ``python``: a script, run with ``python`` in a fresh directory, next to an
    ``aociauth.testing`` token server and bearer registry on 127.0.0.1. The
    Docker config the script finds (``DOCKER_CONFIG``, in a temporary home)
    holds the fixtures' user for that registry, and ``https://registry.example``
    (and ``registry.example``) in the block stand for it; a block that names it
    must have sent the registry requests. A block that defines ``test_``
    functions is run with pytest instead, and must pass. No block may name
    another host: examples contact 127.0.0.1 only.
  - ``sh``, and the ``$ `` lines of ``console``: each command line is checked
    without side effects on the machine. ``pip install`` must install this
    project with extras that exist; ``aociauth ...`` and ``python -m aociauth
    ...`` must be accepted by the command's own parser, and ``demo`` is run;
    ``nox -s`` must name sessions of the noxfile; ``mkdocs build`` builds the
    site into a temporary directory; ``python -c`` is run; ``python -m pytest``
    must name paths that exist. Any other command fails.
  - ``text``: the exception tree, compared with the classes' bases.
  - any other language, or none: fails (mark it as a fragment).

The last tests pin the rule itself: an unmarked block that does not run fails.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import importlib.util
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import aociauth
from aociauth import cli

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: The host name the documentation's scripts use for "your registry".
PLACEHOLDER_HOST = "registry.example"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_FRAGMENT = re.compile(r"^<!--\s*fragment\b(?P<rest>.*?)-->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its text, and its fragment mark."""

    path: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    fragment: str | None  # the mark's text after "fragment" ("" when it gives no reason)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}:{self.lang or 'plain'}"


def extract(text: str, path: str = "<text>") -> list[Block]:
    """The fenced code blocks of a Markdown text, nested and indented fences included.

    A fence closes on a line of the same character, at least as long, and nothing else
    (CommonMark), so a block may show a shorter fence inside it.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        lang = opening["info"].strip().split(" ")[0] if opening["info"].strip() else ""
        mark = _FRAGMENT.match(lines[i - 1].strip()) if i > 0 else None
        body: list[str] = []
        j = i + 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        fragment = mark["rest"].strip().lstrip(":").strip() if mark else None
        blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n", fragment))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [
        block for doc in DOCUMENTS for block in extract(doc.read_text(), str(doc.relative_to(ROOT)))
    ]


BLOCKS = all_blocks()


# -- python: scripts against the loopback registry ----------------------------------------

SEEDED = ["team/app", "team/base", *(f"team/app{i}" for i in range(50))]


def _clean_env(home: Path) -> dict[str, str]:
    """The process environment, with a home of its own and nothing that points elsewhere."""
    drop = {
        "DOCKER_AUTH_CONFIG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "DOCKER_CONFIG",
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith("PYTEST_") and "proxy" not in k.lower()
    }
    env["HOME"] = str(home)
    env["DOCKER_CONFIG"] = str(home / ".docker")
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    # This tree's aociauth, whether or not it is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _names_other_hosts(code: str) -> list[str]:
    return re.findall(r"https?://(?!127\.0\.0\.1[:/])[^\s\"'/]+", code)


def _defines_tests(code: str) -> bool:
    tree = ast.parse(code)
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        for node in tree.body
    )


async def _run(*argv: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} ran longer than {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def check_python(block: Block, tmp: Path) -> None:
    """Run the block as a script (or with pytest) against a loopback registry."""
    from aociauth.testing import Registry, TokenServer
    from aociauth.testing.pytest_plugin import PASSWORD, USER, fixture_grants

    home = tmp / "home"
    (home / ".docker").mkdir(parents=True)
    (home / "run").mkdir()
    async with (
        TokenServer(users={USER: PASSWORD}, grants=fixture_grants()) as ts,
        Registry(auth="bearer", token_server=ts) as registry,
    ):
        for repository in SEEDED:
            registry.seed_image(repository, "latest")
        registry.seed_image("team/app", "v1")
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (home / ".docker" / "config.json").write_text(
            json.dumps({"auths": {registry.host: {"auth": auth}}})
        )
        code = block.code.replace(f"https://{PLACEHOLDER_HOST}", registry.url).replace(
            PLACEHOLDER_HOST, registry.host
        )
        others = _names_other_hosts(code)
        assert not others, f"{block.id} names hosts other than 127.0.0.1: {others}"
        env = _clean_env(home)
        if _defines_tests(code):
            script = tmp / "test_block.py"
            script.write_text(code)
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", script.name]
        else:
            script = tmp / "block.py"
            script.write_text(code)
            argv = [sys.executable, script.name]
        status, output = await _run(*argv, cwd=tmp, env=env)
        assert status == 0, f"{block.id} failed (exit {status}):\n{output}"
        if _defines_tests(code):
            summary = output.strip().splitlines()[-1]
            assert re.match(r"\d+ passed", summary), f"{block.id}: {summary}"
            assert "skipped" not in summary, f"{block.id}: {summary}"
        if PLACEHOLDER_HOST in block.code:
            assert registry.counters.requests > 0, f"{block.id} never asked the registry"


# -- shell: command lines, checked ------------------------------------------------------


def _extras() -> set[str]:
    """The extras pyproject.toml declares (read without tomllib, which 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.MULTILINE))


def _nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    }


def commands(block: Block) -> Iterator[list[str]]:
    """The block's command lines, each split at ``&&`` into commands."""
    if block.lang == "console":
        lines = [ln[2:] for ln in block.code.splitlines() if ln.startswith("$ ")]
        assert lines, f"{block.id}: a console block without a `$ ` command"
    else:
        lines = block.code.replace("\\\n", " ").splitlines()
    for line in lines:
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    yield command
                command = []
            else:
                command.append(word)


def check_pip(args: list[str]) -> None:
    assert args[:1] == ["install"], f"pip {args}: only `pip install` is documented"
    targets = [a for a in args[1:] if not a.startswith("-")]
    assert targets, f"pip {args}: installs nothing"
    for target in targets:
        m = re.fullmatch(r"(?:\.|aociauth)(?:\[(?P<extras>[\w,-]+)\])?", target)
        assert m, f"pip install {target}: not this project"
        unknown = set((m["extras"] or "").split(",")) - {""} - _extras()
        assert not unknown, f"pip install {target}: no such extra {sorted(unknown)}"


async def check_aociauth(args: list[str], tmp: Path) -> None:
    try:
        parsed = cli.build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits: 0 after --help, 2 on a refusal
        if exc.code != 0:
            raise AssertionError(f"aociauth {shlex.join(args)}: the parser refuses it") from None
        return
    if parsed.command == "demo":
        status, output = await _run(
            sys.executable, "-m", "aociauth", *args, cwd=tmp, env=_clean_env(tmp)
        )
        assert status == 0, f"aociauth {shlex.join(args)} failed (exit {status}):\n{output}"


async def check_mkdocs(args: list[str], tmp: Path) -> None:
    assert args[:1] == ["build"], f"mkdocs {args}: only `mkdocs build` is documented"
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the docs extra)")
    env = {**_clean_env(tmp), "NO_MKDOCS_2_WARNING": "1"}
    status, output = await _run(
        sys.executable, "-m", "mkdocs", *args, "--site-dir", str(tmp / "site"), cwd=ROOT, env=env
    )
    assert status == 0, f"mkdocs {shlex.join(args)} failed:\n{output}"


async def check_command(command: list[str], tmp: Path) -> None:
    program, *args = command
    if program in {"python", "python3"} and args[:2] == ["-m", "aociauth"]:
        program, args = "aociauth", args[2:]
    elif program in {"python", "python3"} and args[:1] == ["-m"] and len(args) > 1:
        program, args = args[1], args[2:]
    elif program in {"python", "python3"} and args[:1] == ["-c"]:
        status, output = await _run(sys.executable, *args, cwd=tmp, env=_clean_env(tmp))
        assert status == 0, f"python {shlex.join(args)} failed:\n{output}"
        return
    if program == "pip":
        check_pip(args)
    elif program == "aociauth":
        await check_aociauth(args, tmp)
    elif program == "nox":
        names = [a for i, a in enumerate(args) if i > 0 and args[i - 1] in {"-s", "--session"}]
        assert names, f"nox {args}: name the session (`nox -s NAME`)"
        unknown = set(names) - _nox_sessions()
        assert not unknown, f"nox: no session {sorted(unknown)}"
    elif program == "mkdocs":
        await check_mkdocs(args, tmp)
    elif program == "pytest":
        paths = [a for a in args if not a.startswith("-")]
        missing = [p for p in paths if not (ROOT / p.split("::")[0]).exists()]
        assert not missing, f"pytest: no such path {missing}"
        assert importlib.util.find_spec("pytest_asyncio"), "the tests need pytest-asyncio"
    else:
        raise AssertionError(
            f"`{shlex.join(command)}`: a command this test cannot check; "
            "mark the block as a fragment, or teach check_command about it"
        )


# -- text: the exception tree ----------------------------------------------------------


def check_error_tree(block: Block) -> None:
    """Each class in the tree derives from the class it hangs under; none is missing."""
    lines = [ln for ln in block.code.splitlines() if ln.strip()]
    assert lines[0].split()[0] == "OCIAuthError", f"{block.id}: a text block that is no tree"
    parents: list[type] = []
    shown = set()
    for line in lines:
        m = re.match(r"^(?P<lead>(?:│   |    )*)(?:├── |└── )?(?P<name>\w+)", line)
        assert m, f"{block.id}: cannot read {line!r}"
        depth = len(m["lead"]) // 4 + (1 if line[len(m["lead"]) :].startswith(("├", "└")) else 0)
        cls = getattr(aociauth, m["name"])
        assert isinstance(cls, type), m["name"]
        if depth:
            assert parents[depth - 1] in cls.__bases__, f"{m['name']} under {parents[depth - 1]}"
        parents[depth:] = [cls]
        shown.add(cls)
    public = {
        getattr(aociauth, n)
        for n in aociauth.__all__
        if isinstance(getattr(aociauth, n), type)
        and issubclass(getattr(aociauth, n), aociauth.OCIAuthError)
    }
    assert public <= shown, f"{block.id} misses {sorted(c.__name__ for c in public - shown)}"


# -- one check per block ---------------------------------------------------------------


async def check_block(block: Block, tmp: Path) -> None:
    """Check one block by its language; a fragment is not run but must say why."""
    if block.fragment is not None:
        assert block.fragment, f"{block.id}: a fragment mark says why: <!-- fragment: WHY -->"
        return
    if block.lang in {"python", "py"}:
        await check_python(block, tmp)
    elif block.lang in {"sh", "shell", "bash", "console"}:
        for command in commands(block):
            await check_command(command, tmp)
    elif block.lang == "text":
        check_error_tree(block)
    else:
        raise AssertionError(
            f"{block.id}: a `{block.lang or 'plain'}` block is not checked; mark it as a "
            "fragment (<!-- fragment: WHY --> on the line before its fence)"
        )


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
async def test_block_runs_or_is_a_fragment(block: Block, tmp_path: Path) -> None:
    await check_block(block, tmp_path)


def test_the_readme_and_every_docs_page_are_read() -> None:
    read = {b.path for b in BLOCKS}
    assert "README.md" in read
    # Every page with a fence is among them (a page may have none).
    for doc in DOCUMENTS:
        if "```" in doc.read_text():
            assert str(doc.relative_to(ROOT)) in read, doc


# -- the rule itself ----------------------------------------------------------------------

_UNMARKED = """\
Some prose.

```python
print(USER)
```
"""


def test_extract_reads_marks_languages_and_nested_fences() -> None:
    text = (
        "<!-- fragment: needs a real Redis -->\n"
        "```python\nimport redis\n```\n\n"
        "````markdown\n```sh\nnot a block of its own\n```\n````\n\n"
        "- a list item:\n\n  ```sh\n  nox -s docs\n  ```\n"
    )
    blocks = extract(text)
    assert [(b.lang, b.fragment) for b in blocks] == [
        ("python", "needs a real Redis"),
        ("markdown", None),
        ("sh", None),
    ]
    assert blocks[1].code == "```sh\nnot a block of its own\n```\n"
    assert blocks[2].code == "nox -s docs\n"


async def test_an_unmarked_block_that_fails_fails_the_test(tmp_path: Path) -> None:
    (block,) = extract(_UNMARKED)
    with pytest.raises(AssertionError, match="NameError: name 'USER'"):
        await check_block(block, tmp_path)


async def test_the_same_block_marked_as_a_fragment_is_not_run(tmp_path: Path) -> None:
    marked = _UNMARKED.replace("```python", "<!-- fragment: shows a mistake -->\n```python")
    (block,) = extract(marked)
    await check_block(block, tmp_path)
    (bare,) = extract(_UNMARKED.replace("```python", "<!-- fragment -->\n```python"))
    with pytest.raises(AssertionError, match="says why"):
        await check_block(bare, tmp_path)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("```yaml\nkey: value\n```\n", "not checked"),
        ("```\nACL SETUSER x\n```\n", "not checked"),
        ("```sh\nrm -rf build\n```\n", "cannot check"),
        ("```sh\npip install requests\n```\n", "not this project"),
        ("```sh\npip install -e '.[nonesuch]'\n```\n", "no such extra"),
        ("```sh\nnox -s nonesuch\n```\n", "no session"),
        ("```console\n$ aociauth tokn team/app\n```\n", "parser refuses"),
        (
            "```python\nimport urllib.request\nurllib.request.urlopen('https://example.com')\n```\n",
            "other than 127.0.0.1",
        ),
        ("```python\nprint('hello')\n```\n", None),
        (
            "```python\nimport aociauth\nprint(aociauth.load())  # registry.example\n```\n",
            "never asked the registry",
        ),
    ],
)
async def test_unmarked_blocks_are_held_to_the_rule(
    block: str, message: str | None, tmp_path: Path
) -> None:
    (parsed,) = extract(block)
    if message is None:
        await check_block(parsed, tmp_path)
    else:
        with pytest.raises(AssertionError, match=message):
            await check_block(parsed, tmp_path)


def test_the_exception_tree_check_sees_a_wrong_parent() -> None:
    (good,) = [b for b in BLOCKS if b.lang == "text" and b.fragment is None][:1]
    wrong = good.code.replace("│   └── HelperError", "│   └── TokenServerError", 1)
    assert wrong != good.code
    with pytest.raises(AssertionError):
        check_error_tree(Block("x.md", 1, "text", wrong, None))
