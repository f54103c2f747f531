"""Context variables: values follow tasks made inside the block and never leak."""

from __future__ import annotations

import asyncio

import pytest

from aociauth.context import (
    RequestInfo,
    request_info_from_context,
    request_info_is_set,
    scope_from_context,
    with_request_info,
    with_scope,
)
from aociauth.scope import Scope, parse_scope

FOO = parse_scope("repository:foo:pull")
BAR = parse_scope("repository:bar:pull,push")


def test_defaults_are_empty_and_unset() -> None:
    assert scope_from_context() == Scope()
    assert scope_from_context().is_empty()
    assert request_info_from_context() == RequestInfo()
    assert request_info_from_context().required_scope.is_empty()
    assert not request_info_is_set()


def test_with_scope_sets_and_restores() -> None:
    with with_scope(FOO) as bound:
        assert bound is FOO
        assert scope_from_context() is FOO
    assert scope_from_context().is_empty()


def test_with_scope_nests_and_unwinds_in_order() -> None:
    with with_scope(FOO):
        with with_scope(BAR):
            assert scope_from_context() is BAR
        assert scope_from_context() is FOO
    assert scope_from_context().is_empty()


def test_with_scope_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), with_scope(FOO):
        raise RuntimeError("boom")
    assert scope_from_context().is_empty()


def test_with_request_info_sets_restores_and_nests() -> None:
    outer, inner = RequestInfo(FOO), RequestInfo(BAR)
    with with_request_info(outer) as bound:
        assert bound is outer
        assert request_info_is_set()
        with with_request_info(inner):
            assert request_info_from_context() is inner
        assert request_info_from_context() is outer
    assert not request_info_is_set()
    assert request_info_from_context() == RequestInfo()


def test_request_info_with_empty_scope_still_counts_as_set() -> None:
    with with_request_info(RequestInfo()):
        assert request_info_is_set()
        assert request_info_from_context().required_scope.is_empty()
    assert not request_info_is_set()


def test_scope_and_request_info_are_independent() -> None:
    with with_scope(FOO):
        assert not request_info_is_set()
        with with_request_info(RequestInfo(BAR)):
            assert scope_from_context() is FOO
        assert scope_from_context() is FOO


def test_request_info_is_a_frozen_value() -> None:
    info = RequestInfo(FOO)
    assert info == RequestInfo(parse_scope("repository:foo:pull"))
    assert hash(info) == hash(RequestInfo(FOO.canonical()))
    with pytest.raises(AttributeError):
        info.required_scope = BAR  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["repository:foo:pull", None, 3])
def test_wrong_types_are_refused(bad: object) -> None:
    with pytest.raises(TypeError), with_scope(bad):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError):
        RequestInfo(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError), with_request_info(bad):  # type: ignore[arg-type]
        pass
    assert scope_from_context().is_empty()
    assert not request_info_is_set()


async def test_gather_children_created_inside_the_block_see_the_values() -> None:
    async def observe() -> tuple[Scope, RequestInfo, bool]:
        await asyncio.sleep(0)
        return scope_from_context(), request_info_from_context(), request_info_is_set()

    info = RequestInfo(BAR)
    with with_scope(FOO), with_request_info(info):
        results = await asyncio.gather(*(observe() for _ in range(5)))
        task = asyncio.ensure_future(observe())
    # The task was created inside the block, so it keeps the values even
    # though it runs after the block has exited.
    late = await task
    assert results == [(FOO, info, True)] * 5
    assert late == (FOO, info, True)
    assert scope_from_context().is_empty()


async def test_tasks_created_outside_do_not_see_the_values() -> None:
    seen: list[Scope] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def outsider() -> None:
        started.set()
        await release.wait()
        seen.append(scope_from_context())

    task = asyncio.ensure_future(outsider())
    await started.wait()
    with with_scope(FOO):
        release.set()
        await task
    assert seen == [Scope()]


async def test_concurrent_tasks_never_see_each_others_values() -> None:
    n = 50
    mismatches: list[tuple[int, str]] = []
    checks = 0

    async def worker(i: int) -> None:
        nonlocal checks
        mine = parse_scope(f"repository:r{i}:pull")
        info = RequestInfo(parse_scope(f"repository:r{i}:push"))
        with with_scope(mine), with_request_info(info):
            for step in range(10):
                # Yield often so every worker's block is open at once.
                await asyncio.sleep(0)
                checks += 1
                if scope_from_context() is not mine:
                    mismatches.append((i, f"scope at step {step}"))
                if request_info_from_context() is not info:
                    mismatches.append((i, f"info at step {step}"))
                if step % 3 == 0:
                    with with_scope(BAR):
                        await asyncio.sleep(0)
                        if scope_from_context() is not BAR:
                            mismatches.append((i, f"nested at step {step}"))
        if not scope_from_context().is_empty() or request_info_is_set():
            mismatches.append((i, "leaked after exit"))

    await asyncio.gather(*(worker(i) for i in range(n)))
    assert checks == n * 10
    assert mismatches == []
    assert scope_from_context().is_empty()
    assert not request_info_is_set()


async def test_a_child_inside_its_block_does_not_change_the_parent() -> None:
    inside = asyncio.Event()
    done = asyncio.Event()

    async def child() -> Scope:
        with with_scope(BAR):
            inside.set()
            await done.wait()
            return scope_from_context()

    with with_scope(FOO):
        task = asyncio.ensure_future(child())
        await inside.wait()
        assert scope_from_context() is FOO
        done.set()
        assert await task is BAR
        assert scope_from_context() is FOO
