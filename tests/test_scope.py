"""Scopes: the case tables of the Go package's scope_test.go, and properties."""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aociauth.scope import (
    ACTION_PULL,
    ACTION_PUSH,
    CATALOG_SCOPE,
    TYPE_REGISTRY,
    TYPE_REPOSITORY,
    ResourceScope,
    Scope,
    new_scope,
    parse_scope,
    unlimited_scope,
)


def repo(name: str, action: str) -> ResourceScope:
    return ResourceScope(TYPE_REPOSITORY, name, action)


def parse_maybe_unlimited(s: str) -> Scope:
    return unlimited_scope() if s == "*" else parse_scope(s)


# --- Go: parseScopeTests -----------------------------------------------------

PARSE_CASES = [
    pytest.param(
        "repository:foo/bar/baz:pull",
        "repository:foo/bar/baz:pull",
        [repo("foo/bar/baz", "pull")],
        id="SingleRepository",
    ),
    pytest.param(
        "repository:foo/bar/baz:push,pull",
        "repository:foo/bar/baz:pull,push",
        [repo("foo/bar/baz", "pull"), repo("foo/bar/baz", "push")],
        id="SingleRepositoryMultipleAction",
    ),
    pytest.param(
        "repository:foo/bar/baz:push,pull repository:other:pull",
        "repository:foo/bar/baz:pull,push repository:other:pull",
        [repo("foo/bar/baz", "pull"), repo("foo/bar/baz", "push"), repo("other", "pull")],
        id="MultipleRepositories",
    ),
    pytest.param(
        "repository:foo/bar/baz:push,pull registry:catalog:* repository:other:pull",
        "registry:catalog:* repository:foo/bar/baz:pull,push repository:other:pull",
        [
            CATALOG_SCOPE,
            repo("foo/bar/baz", "pull"),
            repo("foo/bar/baz", "push"),
            repo("other", "pull"),
        ],
        id="MultipleRepositoriesWithCatalog",
    ),
    pytest.param("otherScope", "otherScope", [ResourceScope("otherScope")], id="UnknownScope"),
    pytest.param(
        "repository:foo/bar/baz:delete,push,pull",
        "repository:foo/bar/baz:delete,pull,push",
        [repo("foo/bar/baz", "delete"), repo("foo/bar/baz", "pull"), repo("foo/bar/baz", "push")],
        id="UnknownAction",
    ),
    pytest.param(
        "repository:foo/bar/baz:delete,pull,push repository:other:pull otherScope",
        "otherScope repository:foo/bar/baz:delete,pull,push repository:other:pull",
        [
            ResourceScope("otherScope"),
            repo("foo/bar/baz", "delete"),
            repo("foo/bar/baz", "pull"),
            repo("foo/bar/baz", "push"),
            repo("other", "pull"),
        ],
        id="SeveralUnknown",
    ),
    pytest.param(
        "repository:foo/bar/baz:delete,pull,push otherScope repository:foo/bar/baz:pull,push "
        "repository:other:pull otherScope",
        "otherScope repository:foo/bar/baz:delete,pull,push repository:other:pull",
        [
            ResourceScope("otherScope"),
            repo("foo/bar/baz", "delete"),
            repo("foo/bar/baz", "pull"),
            repo("foo/bar/baz", "push"),
            repo("other", "pull"),
        ],
        id="duplicates",
    ),
]


@pytest.mark.parametrize(("text", "canonical", "want"), PARSE_CASES)
def test_parse_scope_keeps_string_and_sorts_items(
    text: str, canonical: str, want: list[ResourceScope]
) -> None:
    scope = parse_scope(text)
    assert str(scope.canonical()) == canonical
    assert str(scope) == text
    items = list(scope)
    assert items == want
    assert all(a.compare(b) == -1 for a, b in itertools.pairwise(items))
    assert parse_scope(str(scope)) == scope


# --- Go: scopeUnionTests -----------------------------------------------------

UNION_CASES = [
    pytest.param("", "", "", False, id="Empty"),
    pytest.param("", "repository:foo:pull", "repository:foo:pull", False, id="EmptyAndSingle"),
    pytest.param("repository:foo:pull", "", "repository:foo:pull", False, id="SingleAndEmpty"),
    pytest.param("*", "repository:foo:pull", "*", True, id="UnlimitedAndSomething"),
    pytest.param("repository:foo:pull", "*", "*", True, id="SomethingAndUnlimited"),
    pytest.param("*", "*", "*", True, id="UnlimitedAndUnlimited"),
    pytest.param(
        "anotherScope:bad otherScope repository:arble:pull repository:foo:pull,push",
        "otherScope registry:catalog:* repository:foo:delete repository:bar/baz:pull "
        "yetAnotherScope",
        "anotherScope:bad otherScope registry:catalog:* repository:arble:pull "
        "repository:bar/baz:pull repository:foo:delete,pull,push yetAnotherScope",
        False,
        id="Multiple",
    ),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:pull repository:foo:delete "
        "yetAnotherScope",
        "otherScope registry:catalog:* repository:bar/baz:pull repository:foo:delete "
        "yetAnotherScope",
        "otherScope registry:catalog:* repository:bar/baz:pull repository:foo:delete "
        "yetAnotherScope",
        False,
        id="Identical",
    ),
    pytest.param(
        "repository:bar/baz:something,pull arble",
        "arble",
        "repository:bar/baz:something,pull arble",
        False,
        id="StringPreservedWhenResultEqual",
    ),
]


@pytest.mark.parametrize(("s1", "s2", "want", "want_unlimited"), UNION_CASES)
def test_union(s1: str, s2: str, want: str, want_unlimited: bool) -> None:
    a, b = parse_maybe_unlimited(s1), parse_maybe_unlimited(s2)
    u1 = a.union(b)
    assert str(u1) == want
    assert u1.is_unlimited() is want_unlimited
    u2 = b.union(a)
    assert u2.is_unlimited() is want_unlimited
    assert u1 == u2
    assert a | b == u1


# --- Go: scopeHoldsTests -----------------------------------------------------

MANY = "otherScope registry:catalog:* repository:bar/baz:pull repository:foo:delete yetAnotherScope"
MANY_NO_CATALOG = "otherScope repository:bar/baz:pull repository:foo:delete yetAnotherScope"

HOLDS_CASES = [
    pytest.param("", repo("foo", "pull"), False, id="Empty"),
    pytest.param(MANY, repo("bar/baz", "pull"), True, id="RepoMemberPresent"),
    pytest.param(MANY, repo("bar/baz", "push"), False, id="RepoMemberNotPresent"),
    pytest.param(MANY, CATALOG_SCOPE, True, id="CatalogScopePresent"),
    pytest.param(MANY_NO_CATALOG, CATALOG_SCOPE, False, id="CatalogScopeNotPresent"),
    pytest.param(MANY_NO_CATALOG, ResourceScope("otherScope"), True, id="OtherScopePresent"),
    pytest.param(MANY_NO_CATALOG, ResourceScope("notThere"), False, id="OtherScopeNotPresent"),
    pytest.param("*", repo("bar/baz", "push"), True, id="Unlimited"),
]


@pytest.mark.parametrize(("s", "rs", "want"), HOLDS_CASES)
def test_holds(s: str, rs: ResourceScope, want: bool) -> None:
    scope = parse_maybe_unlimited(s)
    assert scope.holds(rs) is want
    assert (rs in scope) is want


# --- Go: scopeContainsTests --------------------------------------------------

CONTAINS_CASES = [
    pytest.param("", "", True, id="EmptyContainsEmpty"),
    pytest.param("foo", "", True, id="SomethingContainsEmpty"),
    pytest.param("*", "foo", True, id="UnlimitedContainsSomething"),
    pytest.param("foo", "*", False, id="SomethingDoesNotContainUnlimited"),
    pytest.param("*", "*", True, id="UnlimitedContainsUnlimited"),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:push,pull repository:foo:delete "
        "yetAnotherScope",
        "otherScope registry:catalog:* repository:bar/baz:pull",
        True,
        id="MultipleContainsMultiple",
    ),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:push repository:foo:delete "
        "yetAnotherScope",
        "otherScope registry:catalog:* repository:bar/baz:pull",
        False,
        id="MultipleDoesNotContainMultiple",
    ),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:push repository:foo:delete "
        "yetAnotherScope",
        "repository:other:pull",
        False,
        id="RepositoryNotPresent",
    ),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:push repository:foo:delete "
        "yetAnotherScope",
        "arble zaphod",
        False,
        id="OtherNotPresent#1",
    ),
    pytest.param(
        "otherScope registry:catalog:* repository:bar/baz:push repository:foo:delete "
        "yetAnotherScope",
        "arble",
        False,
        id="OtherNotPresent#2",
    ),
]


@pytest.mark.parametrize(("s1", "s2", "want"), CONTAINS_CASES)
def test_contains(s1: str, s2: str, want: bool) -> None:
    a, b = parse_maybe_unlimited(s1), parse_maybe_unlimited(s2)
    assert a.contains(b) is want
    if a == b:
        assert b.contains(a)
    elif want:
        assert not b.contains(a)


# --- Go: scopeLenTests -------------------------------------------------------

LEN_CASES = [
    pytest.param(
        lambda: parse_scope(
            "repository:foo:pull,push repository:bar:pull,delete other registry:catalog:*"
        ),
        6,
        id="parsed",
    ),
    pytest.param(new_scope, 0, id="empty"),
    pytest.param(
        lambda: parse_scope("repository:foo:pull,push repository:bar:pull,delete other").union(
            parse_scope("repository:bar:pull repository:bar:push repository:baz:pull more")
        ),
        8,
        id="union",
    ),
    pytest.param(lambda: new_scope(CATALOG_SCOPE), 1, id="catalog"),
]


@pytest.mark.parametrize(("make", "want"), LEN_CASES)
def test_len(make: object, want: int) -> None:
    assert callable(make)
    scope = make()
    assert isinstance(scope, Scope)
    assert len(scope) == want


def test_len_of_unlimited_scope_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"^len called on unlimited scope$"):
        len(unlimited_scope())


# --- Beyond the Go tables ----------------------------------------------------


def test_constants() -> None:
    assert (TYPE_REPOSITORY, TYPE_REGISTRY) == ("repository", "registry")
    assert (ACTION_PULL, ACTION_PUSH) == ("pull", "push")
    assert ResourceScope("registry", "catalog", "*") == CATALOG_SCOPE


def test_unlimited_scope_iterates_over_nothing_and_prints_as_star() -> None:
    u = unlimited_scope()
    assert list(u) == []
    assert str(u) == "*"
    assert u.is_unlimited()
    assert not u.is_empty()
    assert bool(u)
    assert u.canonical().is_unlimited()
    assert u.repositories() == frozenset()


def test_star_parses_to_an_ordinary_item_not_to_unlimited() -> None:
    star = parse_scope("*")
    assert not star.is_unlimited()
    assert list(star) == [ResourceScope("*")]
    assert star != unlimited_scope()
    assert not star.contains(parse_scope("repository:foo:pull"))


def test_empty_scope() -> None:
    empty = Scope()
    assert empty.is_empty()
    assert not empty
    assert len(empty) == 0
    assert list(empty) == []
    assert str(empty) == ""
    assert empty == new_scope() == parse_scope("") == parse_scope(" \t\n")
    assert not empty.is_unlimited()


def test_parsed_whitespace_only_string_is_kept() -> None:
    scope = parse_scope("  ")
    assert scope.is_empty()
    assert str(scope) == "  "
    assert str(scope.canonical()) == ""


def test_items_split_on_go_white_space_only() -> None:
    # Go's strings.Fields does not split on the ASCII separators U+001C..U+001F.
    assert list(parse_scope("a\x1cb")) == [ResourceScope("a\x1cb")]
    assert list(parse_scope("a\u3000b\u00a0c")) == [
        ResourceScope("a"),
        ResourceScope("b"),
        ResourceScope("c"),
    ]


@pytest.mark.parametrize(
    ("item", "want"),
    [
        ("a:b", [ResourceScope("a:b")]),
        ("a:b:c:d", [ResourceScope("a:b:c:d")]),
        ("a::", [ResourceScope("a", "", "")]),
        ("repository:foo:", [repo("foo", "")]),
        ("repository:foo:pull,,push", [repo("foo", ""), repo("foo", "pull"), repo("foo", "push")]),
        ("registry:catalog:*", [CATALOG_SCOPE]),
    ],
)
def test_item_forms(item: str, want: list[ResourceScope]) -> None:
    assert list(parse_scope(item)) == want


def test_new_scope_is_canonical_and_deduplicated() -> None:
    scope = new_scope(repo("foo", "push"), ResourceScope("zzz"), repo("foo", "pull"), CATALOG_SCOPE)
    assert str(scope) == "registry:catalog:* repository:foo:pull,push zzz"
    assert len(new_scope(repo("a", "pull"), repo("a", "pull"))) == 1


def test_equality_ignores_string_and_hash_agrees() -> None:
    a = parse_scope("repository:foo:push,pull")
    b = parse_scope("repository:foo:pull   repository:foo:push")
    assert str(a) != str(b)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, a.canonical()}) == 1
    assert a != unlimited_scope()
    assert a != "repository:foo:pull,push"


def test_union_equal_to_right_side_gets_canonical_string() -> None:
    right = parse_scope("repository:foo:push,pull")
    assert str(Scope().union(right)) == "repository:foo:pull,push"


def test_union_result_equal_to_left_is_left_itself() -> None:
    left = parse_scope("repository:foo:push,pull  other")
    assert left.union(parse_scope("other repository:foo:pull")) is left


def test_operators_refuse_other_types() -> None:
    with pytest.raises(TypeError):
        _ = Scope() | "repository:foo:pull"  # type: ignore[operator]
    assert "repository:foo:pull" not in parse_scope("repository:foo:pull")


def test_scope_is_immutable() -> None:
    scope = parse_scope("repository:foo:pull")
    with pytest.raises(AttributeError):
        scope._items = frozenset()
    with pytest.raises(AttributeError):
        del scope._original
    rs = repo("foo", "pull")
    with pytest.raises(AttributeError):
        rs.action = "push"  # type: ignore[misc]


def test_pickle_and_copy_keep_value_and_string() -> None:
    scope = parse_scope("repository:foo:push,pull other")
    pickled = pickle.loads(pickle.dumps(scope))  # noqa: S301 (our own bytes)
    for clone in (pickled, copy.copy(scope), copy.deepcopy(scope)):
        assert clone == scope
        assert str(clone) == str(scope)
    assert pickle.loads(pickle.dumps(unlimited_scope())).is_unlimited()  # noqa: S301


def test_repositories_lists_repository_names_with_any_action() -> None:
    scope = parse_scope(
        "repository:a/b:pull repository:c:delete registry:catalog:* x repository::y"
    )
    assert scope.repositories() == frozenset({"a/b", "c"})


def test_resource_scope_order_and_compare() -> None:
    a, b = repo("a", "push"), repo("b", "pull")
    assert a < b
    assert a.compare(b) == -1
    assert b.compare(a) == 1
    assert a.compare(repo("a", "push")) == 0
    assert sorted([b, CATALOG_SCOPE, a]) == [CATALOG_SCOPE, a, b]
    assert str(a) == "repository:a:push"
    assert str(ResourceScope("bare")) == "bare"


def test_repr_names_the_scope() -> None:
    assert repr(parse_scope("repository:foo:pull")) == "parse_scope('repository:foo:pull')"
    assert repr(unlimited_scope()) == "unlimited_scope()"


# --- Properties --------------------------------------------------------------

# Parts drawn from an alphabet without ':', ',' or white space, so that an
# item's spelling parses back to the same item.
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-*", min_size=1, max_size=8)

resource_scopes = st.one_of(
    st.builds(
        ResourceScope,
        st.just(TYPE_REPOSITORY),
        st.sampled_from(["foo", "bar/baz", "a"]) | _word,
        st.sampled_from([ACTION_PULL, ACTION_PUSH, "delete", "*"]) | _word,
    ),
    st.just(CATALOG_SCOPE),
    st.builds(ResourceScope, _word),
    st.builds(ResourceScope, _word, _word, _word),
)
scopes = st.lists(resource_scopes, max_size=8).map(lambda rss: new_scope(*rss))
scopes_or_unlimited = scopes | st.just(unlimited_scope())


def as_set(s: Scope) -> frozenset[ResourceScope] | None:
    return None if s.is_unlimited() else frozenset(s)


@given(scopes_or_unlimited, scopes_or_unlimited)
def test_union_is_commutative(a: Scope, b: Scope) -> None:
    assert a | b == b | a


@given(scopes_or_unlimited, scopes_or_unlimited, scopes_or_unlimited)
def test_union_is_associative(a: Scope, b: Scope, c: Scope) -> None:
    assert (a | b) | c == a | (b | c)


@given(scopes, scopes)
def test_union_is_set_union(a: Scope, b: Scope) -> None:
    assert as_set(a | b) == frozenset(a) | frozenset(b)


@given(scopes_or_unlimited)
def test_contains_is_reflexive(a: Scope) -> None:
    assert a.contains(a)


@given(scopes_or_unlimited, scopes_or_unlimited, scopes_or_unlimited)
def test_contains_is_transitive(a: Scope, b: Scope, c: Scope) -> None:
    # Build the chain so the premise holds often enough to matter.
    ab, abc = a | b, a | b | c
    assert abc.contains(ab)
    assert ab.contains(a)
    assert abc.contains(a)
    if a.contains(b) and b.contains(c):
        assert a.contains(c)


@given(scopes_or_unlimited, scopes_or_unlimited)
def test_contains_agrees_with_union(a: Scope, b: Scope) -> None:
    assert a.contains(b) == (a | b == a)


@given(scopes)
def test_string_round_trips(a: Scope) -> None:
    again = parse_scope(str(a))
    assert again == a
    assert str(again) == str(a)
    assert parse_scope(str(a.canonical())) == a


@given(scopes, resource_scopes)
def test_unlimited_contains_and_holds_everything(a: Scope, rs: ResourceScope) -> None:
    u = unlimited_scope()
    assert u.contains(a)
    assert u.holds(rs)
    assert rs in u
    assert not a.contains(u)


@given(scopes_or_unlimited, scopes_or_unlimited)
def test_hash_agrees_with_equality(a: Scope, b: Scope) -> None:
    if a == b:
        assert hash(a) == hash(b)
    assert (a == b) == (as_set(a) == as_set(b))


@given(st.lists(resource_scopes, max_size=8))
def test_iteration_is_sorted_and_holds_agrees(rss: list[ResourceScope]) -> None:
    scope = new_scope(*rss)
    items = list(scope)
    assert items == sorted(set(rss))
    assert len(scope) == len(set(rss))
    assert all(scope.holds(rs) for rs in rss)


@given(st.text(max_size=60))
def test_parse_never_raises_and_keeps_the_string(text: str) -> None:
    scope = parse_scope(text)
    assert str(scope) == text
    items = list(scope)
    assert items == sorted(items)
