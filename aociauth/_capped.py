"""Reading a response body up to a cap: one rule for every client and caller.

A token server, a registry or anything between them may send a body of any
size; the middleware, the httpx adapter and the command line each read one
only up to a limit. The rule is the same for all: a declared length past the
cap fails before a byte is read, and the running total fails as soon as it
passes the cap, so nothing past it is kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

__all__ = ["collect_capped", "declared_length"]


async def collect_capped(
    chunks: AsyncIterable[bytes],
    cap: int,
    declared: int | None,
    too_big: Callable[[], Exception],
) -> bytes:
    """The bytes of ``chunks``; ``too_big()`` is raised once the body passes ``cap``.

    ``declared`` is the body's ``Content-Length`` when it has one: past the cap,
    the error comes before anything is read.
    """
    if declared is not None and declared > cap:
        raise too_big()
    collected: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise too_big()
        collected.append(chunk)
    return b"".join(collected)


def declared_length(value: str | None) -> int | None:
    """A ``Content-Length`` header's value as a number, or None when absent or not one."""
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)
