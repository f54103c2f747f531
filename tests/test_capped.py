"""The one capped body reader: what it keeps, and when it stops reading."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from aociauth._capped import collect_capped, declared_length


class TooBigError(Exception):
    pass


class Chunks:
    """An async iterator over ``parts`` that counts how many were taken."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = list(parts)
        self.taken = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            self.taken += 1
            yield part


@pytest.mark.parametrize(
    ("parts", "cap", "declared", "body", "taken"),
    [
        ([], 10, None, b"", 0),
        ([b"abc", b"def"], 10, None, b"abcdef", 2),
        ([b"abcde", b"fghij"], 10, 10, b"abcdefghij", 2),  # exactly the cap
        ([b"abcde", b"fghij", b"k", b"never"], 10, None, None, 3),  # stops at the passing chunk
        ([b"x" * 11], 10, None, None, 1),
        ([b"abc"], 10, 11, None, 0),  # a declared length past the cap: nothing read
        ([b"x" * 20], 10, 3, None, 1),  # a declared length that lies is not believed
    ],
)
async def test_a_body_is_kept_up_to_the_cap_and_no_further(
    parts: list[bytes], cap: int, declared: int | None, body: bytes | None, taken: int
) -> None:
    chunks = Chunks(parts)
    if body is None:
        with pytest.raises(TooBigError):
            await collect_capped(chunks, cap, declared, TooBigError)
    else:
        assert await collect_capped(chunks, cap, declared, TooBigError) == body
    assert chunks.taken == taken


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (None, None),
        ("", None),
        ("12", 12),
        ("0", 0),
        ("-1", None),
        ("1e3", None),
        (" 5", None),
        ("\u0663", None),
    ],
)
def test_a_content_length_is_read_only_when_it_is_a_number(
    value: str | None, length: int | None
) -> None:
    assert declared_length(value) == length
