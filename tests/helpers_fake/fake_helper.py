#!/usr/bin/env python3
"""A fake ``docker-credential-*`` helper for the tests; its behaviour depends on the server URL.

The tests install it under whatever helper name they need, with the running
interpreter in the first line. With FAKE_HELPER_LOG set it appends one JSON
line per run (argv, standard input, pid), so tests count runs; with
FAKE_HELPER_PIDS set, helpers that leave processes behind append their pids.
"""

import json
import os
import subprocess
import sys
import time

NOT_FOUND = "credentials not found in native keychain"


def record(path_var, line):
    path = os.environ.get(path_var)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def answer(username, secret, server_url):
    sys.stdout.write(json.dumps({"ServerURL": server_url, "Username": username, "Secret": secret}))
    sys.stdout.flush()


def spawn_sleeper():
    """A child that inherits our stdout and stderr and outlives us unless killed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    record("FAKE_HELPER_PIDS", f"child {child.pid}")
    return child


def main():
    server_url = sys.stdin.read()
    record(
        "FAKE_HELPER_LOG",
        json.dumps({"argv": sys.argv[1:], "stdin": server_url, "pid": os.getpid()}),
    )
    record("FAKE_HELPER_PIDS", f"helper {os.getpid()}")
    if sys.argv[1:] == ["list"]:
        listing = os.environ.get("FAKE_HELPER_LIST")
        if listing is None:
            sys.stderr.write("list is not supported\n")
            return 1
        sys.stdout.write(listing)
        return 0
    if sys.argv[1:] != ["get"]:
        sys.stderr.write("usage: docker-credential-fake get\n")
        return 2
    if server_url == "registry-with-basic-auth.com":
        answer("someuser", "somesecret", server_url)
    elif server_url == "registry-with-token.com":
        answer("<token>", "sometoken", server_url)
    elif server_url == "registry-with-env-lookup.com":
        answer("someuser", os.environ.get("TEST_SECRET", ""), server_url)
    elif server_url == "registry-with-error.com":
        sys.stderr.write("some error\n")
        return 1
    elif server_url == "https://index.docker.io/v1/":
        answer("hubuser", "hubsecret", server_url)
    elif server_url == "empty.test":
        answer("", "", server_url)
    elif server_url == "garbage.test":
        sys.stdout.write('WARNING: something\n{"Username": "alice", "Secret": "GARBAGE-SECRET"}')
    elif server_url == "two.test":
        sys.stdout.write(
            '{"Username": "a", "Secret": "TWO-SECRET"}{"Username": "b", "Secret": "c"}'
        )
    elif server_url == "bad-types.test":
        sys.stdout.write('{"Username": 5, "Secret": "TYPED-SECRET"}')
    elif server_url == "null.test":
        sys.stdout.write("null")
    elif server_url == "list.test":
        sys.stdout.write('["LIST-SECRET"]')
    elif server_url == "empty-secret.test":
        sys.stdout.write('{"Username": "alice", "Secret": ""}')
    elif server_url == "braces.test":
        # containers/image's test helper answers a server it does not know so.
        sys.stdout.write("{}")
    elif server_url == "server-only.test":
        sys.stdout.write(json.dumps({"ServerURL": server_url}))
    elif server_url == "username-only.test":
        sys.stdout.write('{"Username": "alice"}')
    elif server_url == "secret-only.test":
        sys.stdout.write('{"Secret": "LONE-SECRET"}')
    elif server_url == "null-fields.test":
        sys.stdout.write('{"Username": null, "Secret": null}')
    elif server_url == "number-secret.test":
        sys.stdout.write('{"Username": "alice", "Secret": 12345}')
    elif server_url == "crlf-secret.test":
        answer("alice", "CRLF-SECRET\r\nX-Injected: 1", server_url)
    elif server_url == "nul-username.test":
        answer("ali\x00ce", "NUL-SECRET", server_url)
    elif server_url == "exit-zero-not-found.test":
        sys.stdout.write(NOT_FOUND + "\n")
    elif server_url == "huge.test":
        chunk = b"x" * 65536
        try:
            for _ in range(80):  # 5 MiB
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        except BrokenPipeError:
            return 0
    elif server_url == "big-stderr.test":
        sys.stderr.write("noise " * 200000)
        sys.stderr.flush()
        answer("alice", "s3cret", server_url)
    elif server_url == "fail-with-secret.test":
        answer("alice", "STDOUT-SECRET", server_url)
        sys.stderr.write("helper \x1b[31mexploded\x07\nbadly\n")
        return 3
    elif server_url == "not-found-stderr.test":
        sys.stderr.write(NOT_FOUND + "\n")
        return 1
    elif server_url == "hang.test":
        spawn_sleeper()
        time.sleep(1000)
    elif server_url == "stdout-closed.test":
        sys.stdout.close()
        os.close(1)
        time.sleep(1000)
    elif server_url == "leftover.test":
        spawn_sleeper()
        answer("alice", "s3cret", server_url)
    elif server_url == "gate.test":
        gate = os.environ["FAKE_HELPER_GATE"]
        for _ in range(6000):
            if os.path.exists(gate):
                break
            time.sleep(0.01)
        answer("gated", "gatesecret", server_url)
    else:
        sys.stdout.write(NOT_FOUND + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
