"""Concurrent calls with one key share one run of the work: token fetches,
credential lookups and credential-helper runs all go through :class:`SingleFlight`.

Two ways to run the work, chosen by the owner:

* with a ``spawn`` function (asyncio: the owner keeps the task and cancels it
  on close), the work runs in a task of its own, so a caller that is
  cancelled leaves it running for the others, and a run all callers left is
  joined by the next one;
* without (trio, through the httpx adapter: structured concurrency allows no
  task nobody owns), the first caller runs the work in its own task; if it is
  cancelled, a waiting caller takes over.

Waiters wait on an :class:`anyio.Event`, so both work under asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["SingleFlight", "Spawn"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Start a coroutine in a task the owner keeps; the done callback runs when it ends.
Spawn = Callable[[Coroutine[Any, Any, None]], object]


@dataclass
class _Flight(Generic[V]):
    done: anyio.Event = field(default_factory=anyio.Event)
    value: V | None = None
    error: BaseException | None = None
    #: The run ended without a result: cancelled (the owner closed, or its caller left).
    abandoned: bool = False


class SingleFlight(Generic[K, V]):
    """Runs of ``work`` shared by key; see the module docstring.

    ``on_end(key)`` is called when a run of ``key`` ends, however it ends.
    ``abandoned()`` makes the error a waiter gets when the run it waited for
    was cancelled by the owner (spawn mode): never a ``CancelledError`` in a
    task nobody cancelled.
    """

    def __init__(
        self,
        *,
        spawn: Spawn | None,
        abandoned: Callable[[], BaseException],
        on_end: Callable[[K], None] | None = None,
    ) -> None:
        self._spawn = spawn
        self._abandoned = abandoned
        self._on_end = on_end
        self._flights: dict[K, _Flight[V]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """The result of the run of ``key`` in flight, or of a new run of ``work``."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                if self._spawn is not None:
                    self._spawn(self._complete(key, flight, work))
                else:
                    await self._complete(key, flight, work)
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if not flight.abandoned:
                return flight.value  # type: ignore[return-value]
            if self._spawn is not None:
                raise self._abandoned()
            # Inline mode: its runner was cancelled; this caller runs it again.

    async def _complete(self, key: K, flight: _Flight[V], work: Callable[[], Awaitable[V]]) -> None:
        try:
            flight.value = await work()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                flight.abandoned = True
                raise
            flight.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if self._on_end is not None:
                self._on_end(key)
            flight.done.set()
