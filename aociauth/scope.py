"""Authorization scopes: :class:`ResourceScope` and :class:`Scope`.

A scope says what a token allows, in the syntax of the distribution token
specification (https://distribution.github.io/distribution/spec/auth/scope/):
space-separated items of the form ``type:resource:actions``. Both classes are
immutable values; nothing here does I/O.

:class:`Scope` keeps its items in a frozenset, so the operations the
middleware runs on every request (:meth:`Scope.contains`, :meth:`Scope.union`,
hashing) are single set operations. The sorted order and the canonical string
are computed once, when first asked for.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTION_PULL",
    "ACTION_PUSH",
    "CATALOG_SCOPE",
    "TYPE_REGISTRY",
    "TYPE_REPOSITORY",
    "ResourceScope",
    "Scope",
    "new_scope",
    "parse_scope",
    "unlimited_scope",
]

TYPE_REPOSITORY = "repository"
"""Resource type of a repository scope (``repository:NAME:ACTIONS``)."""

TYPE_REGISTRY = "registry"
"""Resource type of a registry-wide scope, such as :data:`CATALOG_SCOPE`."""

ACTION_PULL = "pull"
"""The action that allows reading a repository."""

ACTION_PUSH = "push"
"""The action that allows writing a repository."""


@dataclass(frozen=True, order=True, slots=True)
class ResourceScope:
    """One action on one resource: a single element of a :class:`Scope`.

    Totally ordered by (``resource_type``, ``resource``, ``action``), which is
    the order a :class:`Scope` iterates in. An item of a scope string that
    does not have the ``type:resource:actions`` form is kept whole in
    ``resource_type``, with ``resource`` and ``action`` empty.
    """

    resource_type: str
    """The kind of resource, usually :data:`TYPE_REPOSITORY` or :data:`TYPE_REGISTRY`."""

    resource: str = ""
    """The resource's name; for a repository, the repository name."""

    action: str = ""
    """What may be done to the resource, usually :data:`ACTION_PULL` or :data:`ACTION_PUSH`."""

    def compare(self, other: ResourceScope) -> int:
        """Return -1, 0 or 1 as ``self`` sorts before, equal to, or after ``other``."""
        a = (self.resource_type, self.resource, self.action)
        b = (other.resource_type, other.resource, other.action)
        return (a > b) - (a < b)

    def __str__(self) -> str:
        if not self.resource and not self.action:
            return self.resource_type
        return f"{self.resource_type}:{self.resource}:{self.action}"


CATALOG_SCOPE = ResourceScope(TYPE_REGISTRY, "catalog", "*")
"""The scope that allows listing every repository of a registry (``/v2/_catalog``)."""

_sort_key = operator.attrgetter("resource_type", "resource", "action")

# Go's strings.Fields splits on Unicode White_Space; Python's str.split also
# splits on U+001C..U+001F, which Go keeps inside an item.
_FIELD = re.compile("[^\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


class Scope:
    """An immutable set of :class:`ResourceScope` values, or the unlimited scope.

    ``Scope()`` is the empty set. Build others with :func:`new_scope`,
    :func:`parse_scope` and :func:`unlimited_scope`. Two scopes are equal when
    they hold the same items, whatever strings they were parsed from; ``str()``
    gives back the parsed string unchanged, so a scope sent to a token server
    is spelt as the registry spelt it. Iteration is in
    :meth:`ResourceScope.compare` order.

    The unlimited scope (the scope of a token from the configuration) contains
    every scope, iterates over nothing, prints as ``*`` and has no length.
    """

    __slots__ = ("_canonical", "_items", "_original", "_sorted", "_unlimited")

    _items: frozenset[ResourceScope]
    _unlimited: bool
    _original: str | None
    _sorted: tuple[ResourceScope, ...] | None
    _canonical: str | None

    def __init__(self) -> None:
        _init(self, frozenset(), unlimited=False, original=None)

    @classmethod
    def _make(
        cls,
        items: frozenset[ResourceScope],
        *,
        unlimited: bool = False,
        original: str | None = None,
    ) -> Scope:
        scope = object.__new__(cls)
        _init(scope, items, unlimited=unlimited, original=original)
        return scope

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Scope is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Scope is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (tuple(self._items), self._unlimited, self._original))

    def is_empty(self) -> bool:
        """Report whether the scope holds nothing (the unlimited scope is not empty)."""
        return not self._items and not self._unlimited

    def is_unlimited(self) -> bool:
        """Report whether this is the unlimited scope, which contains every other."""
        return self._unlimited

    def canonical(self) -> Scope:
        """Return the same set with its string in canonical form.

        Canonical form lists the items sorted, the actions on one repository
        joined by ``,`` (``repository:foo:pull,push``).
        """
        if self._original is None:
            return self
        scope = Scope._make(self._items, unlimited=self._unlimited)
        object.__setattr__(scope, "_sorted", self._sorted)
        return scope

    def contains(self, other: Scope) -> bool:
        """Report whether ``self`` is a (non-strict) superset of ``other``.

        The unlimited scope contains everything; no other scope contains it.
        """
        if self._unlimited:
            return True
        if other._unlimited:
            return False
        return self._items >= other._items

    def union(self, other: Scope) -> Scope:
        """Return the scope holding the items of both.

        When the result equals ``self``, ``self`` itself is returned, so its
        string is kept. Anything united with the unlimited scope is unlimited.
        """
        if self._unlimited:
            return self
        if other._unlimited:
            return other
        if other._items <= self._items:
            return self
        return Scope._make(self._items | other._items)

    def __or__(self, other: Scope) -> Scope:
        if not isinstance(other, Scope):
            return NotImplemented
        return self.union(other)

    def holds(self, rs: ResourceScope) -> bool:
        """Report whether the scope includes the single item ``rs``."""
        return self._unlimited or rs in self._items

    def __contains__(self, rs: object) -> bool:
        if not isinstance(rs, ResourceScope):
            return False
        return self.holds(rs)

    def repositories(self) -> frozenset[str]:
        """Return the names of the repositories the scope mentions, with any action.

        Empty for the unlimited scope, whose repositories cannot be listed.
        Items with an empty repository name are left out.
        """
        return frozenset(
            rs.resource for rs in self._items if rs.resource_type == TYPE_REPOSITORY and rs.resource
        )

    def _sorted_items(self) -> tuple[ResourceScope, ...]:
        items = self._sorted
        if items is None:
            items = tuple(sorted(self._items, key=_sort_key))
            object.__setattr__(self, "_sorted", items)
        return items

    def __iter__(self) -> Iterator[ResourceScope]:
        if self._unlimited:
            return iter(())
        return iter(self._sorted_items())

    def __len__(self) -> int:
        if self._unlimited:
            raise TypeError("len called on unlimited scope")
        return len(self._items)

    def __bool__(self) -> bool:
        # Without this, bool() would fall back on __len__, which raises for
        # the unlimited scope.
        return not self.is_empty()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return self._unlimited == other._unlimited and self._items == other._items

    def __hash__(self) -> int:
        return hash((self._unlimited, self._items))

    def __str__(self) -> str:
        if self._unlimited:
            return "*"
        if self._original is not None:
            return self._original
        text = self._canonical
        if text is None:
            text = _format(self._sorted_items())
            object.__setattr__(self, "_canonical", text)
        return text

    def __repr__(self) -> str:
        if self._unlimited:
            return "unlimited_scope()"
        return f"parse_scope({str(self)!r})"


def _init(
    scope: Scope, items: frozenset[ResourceScope], *, unlimited: bool, original: str | None
) -> None:
    setattr_ = object.__setattr__
    setattr_(scope, "_items", items)
    setattr_(scope, "_unlimited", unlimited)
    setattr_(scope, "_original", original)
    setattr_(scope, "_sorted", None)
    setattr_(scope, "_canonical", None)


def _restore(items: tuple[ResourceScope, ...], unlimited: bool, original: str | None) -> Scope:
    return Scope._make(frozenset(items), unlimited=unlimited, original=original)


def _format(items: Iterable[ResourceScope]) -> str:
    """Spell sorted items in canonical form, actions on one repository joined by ','."""
    parts: list[str] = []
    prev: ResourceScope | None = None
    for rs in items:
        if (
            prev is not None
            and rs.resource_type == TYPE_REPOSITORY
            and prev.resource_type == TYPE_REPOSITORY
            and rs.resource == prev.resource
        ):
            parts.append(",")
            parts.append(rs.action)
        else:
            if parts:
                parts.append(" ")
            parts.append(str(rs))
        prev = rs
    return "".join(parts)


_UNLIMITED = Scope._make(frozenset(), unlimited=True)

#: The empty scope the request context defaults to and the core's request facts carry
#: when none was given: one object, so the hot path tells "none given" by identity.
EMPTY_SCOPE = Scope()


def new_scope(*rss: ResourceScope) -> Scope:
    """Return the scope holding exactly ``rss`` (duplicates collapse), in canonical form."""
    return Scope._make(frozenset(rss))


def parse_scope(s: str) -> Scope:
    """Parse a scope string as the distribution token specification defines it.

    Items are separated by white space. An item with exactly three
    ``:``-separated parts is ``type:resource:actions``, giving one
    :class:`ResourceScope` per comma-separated action; any other item is kept
    whole as ``ResourceScope(item)``. Nothing is rejected. ``str()`` of the
    result is ``s`` unchanged. ``"*"`` parses to the item ``"*"``, not to the
    unlimited scope.
    """
    items: list[ResourceScope] = []
    for field in _FIELD.findall(s):
        parts = field.split(":")
        if len(parts) != 3:
            items.append(ResourceScope(field))
            continue
        resource_type, resource, actions = parts
        items.extend(ResourceScope(resource_type, resource, a) for a in actions.split(","))
    return Scope._make(frozenset(items), original=s)


def unlimited_scope() -> Scope:
    """Return the scope that contains every other scope.

    It has no spelling in the scope syntax (``str()`` gives ``*``); it stands
    for a token that allows anything, such as one taken from the configuration.
    """
    return _UNLIMITED
