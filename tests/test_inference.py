"""Scope inference from a request's method and path, by distribution's routes."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from yarl import URL

from aociauth.inference import infer_scope
from aociauth.scope import CATALOG_SCOPE, Scope, new_scope, parse_scope

DIGEST = "sha256:" + "0123456789abcdef" * 4
PULL = ("GET", "HEAD")
WRITE = ("POST", "PUT", "PATCH")

ROUTES = [
    "/v2/{name}/manifests/latest",
    "/v2/{name}/manifests/" + DIGEST,
    "/v2/{name}/blobs/" + DIGEST,
    "/v2/{name}/blobs/uploads/",
    "/v2/{name}/blobs/uploads/6d1c5a4e-3c2b-4f1a-9d7e-0a1b2c3d4e5f",
    "/v2/{name}/blobs/uploads/YWJj_ZGVm.Z2hp=",
    "/v2/{name}/tags/list",
    "/v2/{name}/referrers/" + DIGEST,
]

METHOD_SCOPES = [
    *((m, "repository:{name}:pull") for m in PULL),
    *((m, "repository:{name}:pull,push") for m in WRITE),
    ("DELETE", "repository:{name}:delete"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("method", "want"), METHOD_SCOPES)
@pytest.mark.parametrize("name", ["foo", "library/ubuntu", "a/b/c/d", "my-org/x.y_z/a__b"])
def test_every_route_and_method(route: str, method: str, want: str, name: str) -> None:
    scope = infer_scope(method, route.format(name=name))
    assert scope is not None
    assert str(scope) == want.format(name=name)
    assert scope == parse_scope(want.format(name=name))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PROPFIND", ""])
def test_methods_without_an_access_rule_give_none(route: str, method: str) -> None:
    assert infer_scope(method, route.format(name="foo")) is None


def test_method_case_does_not_matter() -> None:
    assert infer_scope("get", "/v2/foo/tags/list") == parse_scope("repository:foo:pull")
    assert infer_scope("Put", "/v2/foo/manifests/1") == parse_scope("repository:foo:pull,push")


@pytest.mark.parametrize("path", ["/v2/", "/v2", "/prefix/v2/", "/a/b/v2"])
@pytest.mark.parametrize("method", PULL)
def test_base_needs_an_empty_scope(path: str, method: str) -> None:
    scope = infer_scope(method, path)
    assert scope == Scope()
    assert scope is not None
    assert str(scope) == ""


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/_catalog/", "/prefix/v2/_catalog"])
@pytest.mark.parametrize("method", PULL)
def test_catalog_needs_the_catalog_scope(path: str, method: str) -> None:
    scope = infer_scope(method, path)
    assert scope == new_scope(CATALOG_SCOPE)
    assert str(scope) == "registry:catalog:*"


@pytest.mark.parametrize("path", ["/v2/", "/v2/_catalog"])
@pytest.mark.parametrize("method", [*WRITE, "DELETE", "OPTIONS"])
def test_base_and_catalog_only_answer_reads(path: str, method: str) -> None:
    assert infer_scope(method, path) is None


@pytest.mark.parametrize(
    ("path", "name"),
    [
        # Route words inside the name.
        ("/v2/foo/tags/tags/list", "foo/tags"),
        ("/v2/manifests/manifests/latest", "manifests"),
        ("/v2/blobs/blobs/" + DIGEST, "blobs"),
        ("/v2/a/blobs/uploads/blobs/" + DIGEST, "a/blobs/uploads"),
        ("/v2/a/manifests/tags/list", "a/manifests"),
        ("/v2/a/tags/list/manifests/x", "a/tags/list"),
        ("/v2/uploads/blobs/uploads/", "uploads"),
        ("/v2/referrers/referrers/" + DIGEST, "referrers"),
        ("/v2/_x/../foo/tags/list", None),
        ("/v2/v2/tags/list", "v2"),
        ("/v2/foo/manifests/v2", "foo"),
        # A tag may look like anything but a slash.
        ("/v2/foo/manifests/_catalog", "foo"),
        ("/v2/foo/manifests/Latest.1-rc_2", "foo"),
        # Separators distribution's grammar allows.
        ("/v2/a.b/tags/list", "a.b"),
        ("/v2/a_b/tags/list", "a_b"),
        ("/v2/a__b/tags/list", "a__b"),
        ("/v2/a---b/tags/list", "a---b"),
        ("/v2/0/tags/list", "0"),
    ],
)
def test_names(path: str, name: str | None) -> None:
    scope = infer_scope("GET", path)
    if name is None:
        assert scope is None
    else:
        assert scope is not None
        assert scope.repositories() == {name}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/prefix/v2/foo/manifests/latest", "foo"),
        ("/a/b/c/v2/foo/bar/tags/list", "foo/bar"),
        # The first "v2" after which the rest parses wins.
        ("/v2/foo/v2/bar/manifests/latest", "foo/v2/bar"),
        ("/Prefix/v2/foo/tags/list", "foo"),
        ("/v2/Bad/v2/foo/tags/list", "foo"),
        ("/x/v2/v2/tags/list", "v2"),
    ],
)
def test_path_prefixes(path: str, name: str) -> None:
    scope = infer_scope("GET", path)
    assert scope is not None
    assert scope.repositories() == {name}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/foo/tags/list/",
        "/v2/foo/manifests/latest/",
        "/v2/foo/blobs/" + DIGEST + "/",
        "/v2/foo/blobs/uploads",
        "/v2/foo/blobs/uploads/",
        "/v2/foo/blobs/uploads/abc/",
        "/v2/foo/referrers/" + DIGEST + "/",
    ],
)
def test_trailing_slash_variants(path: str) -> None:
    assert infer_scope("GET", path) == parse_scope("repository:foo:pull")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "v2/foo/tags/list",
        "/v3/foo/tags/list",
        "/v2/Foo/tags/list",
        "/v2/foo//bar/tags/list",
        "/v2//foo/tags/list",
        "/v2/../tags/list",
        "/v2/foo/../tags/list",
        "/v2/./foo/tags/list",
        "/v2/-foo/tags/list",
        "/v2/foo-/tags/list",
        "/v2/foo_/tags/list",
        "/v2/a___b/tags/list",
        "/v2/a..b/tags/list",
        "/v2/a.-b/tags/list",
        "/v2/foo bar/tags/list",
        "/v2/localhost:5000/foo/tags/list",
        "/v2/fü/tags/list",
        "/v2/tags/list",
        "/v2/manifests/latest",
        "/v2/foo/tags/list//",
        "/v2/foo/tags",
        "/v2/foo/tags/other",
        "/v2/foo/manifests/",
        "/v2/foo/manifests/a/b",
        "/v2/foo/manifests/-bad",
        "/v2/foo/manifests/" + "t" * 129,
        "/v2/foo/blobs/notadigest",
        "/v2/foo/blobs/SHA256:abc",
        "/v2/foo/blobs/sha256:",
        "/v2/foo/blobs/uploads//",
        "/v2/foo/blobs/uploads/a:b",
        "/v2/foo/referrers/latest",
        "/v2/foo",
        "/v2/foo/",
        "/v2/_catalog/x",
        "/v2/_catalog//",
        "/v2//",
        "/v2/foo%2Fbar/tags/list",
        "/v2/" + "a" * 256 + "/tags/list",
        "/v2/" + "/".join(["ab"] * 86) + "/tags/list",
        "/registry/foo/tags/list",
        "/v2/foo/tags/list?n=10",
    ],
)
def test_not_a_route_gives_none(path: str) -> None:
    assert infer_scope("GET", path) is None


def test_name_length_limit_is_distributions_255() -> None:
    assert infer_scope("GET", "/v2/" + "a" * 255 + "/tags/list") is not None
    longest = "/".join(["ab"] * 85)  # 254 characters
    assert infer_scope("GET", f"/v2/{longest}/tags/list") is not None


def test_many_v2_segments_stay_within_the_name_limit() -> None:
    scope = infer_scope("GET", "/v2" * 5000 + "/tags/list")
    assert scope is not None
    (name,) = scope.repositories()
    assert set(name.split("/")) == {"v2"}
    assert len(name) == 254  # 85 components, the most that fit in 255


def test_host_and_port_do_not_matter() -> None:
    for url in ("http://127.0.0.1:5000", "https://registry.example", "https://r.example:8443"):
        path = URL(url + "/v2/foo/manifests/latest").path
        assert infer_scope("GET", path) == parse_scope("repository:foo:pull")


def test_percent_encoded_path_is_decoded_by_the_caller() -> None:
    path = URL("http://r.example/v2/my%2Drepo/tags/list", encoded=True).path
    assert path == "/v2/my-repo/tags/list"
    assert infer_scope("GET", path) == parse_scope("repository:my-repo:pull")


MOUNT = "/v2/foo/blobs/uploads/"


@pytest.mark.parametrize(
    ("method", "path", "query", "want"),
    [
        pytest.param(
            "POST",
            MOUNT,
            {"mount": DIGEST, "from": "other/repo"},
            "repository:foo:pull,push repository:other/repo:pull",
            id="mount-with-from",
        ),
        pytest.param(
            "POST",
            "/v2/foo/blobs/uploads",
            MultiDict([("mount", DIGEST), ("from", "bar"), ("from", "baz")]),
            "repository:bar:pull repository:foo:pull,push",
            id="multidict-first-from-wins",
        ),
        pytest.param(
            "POST", MOUNT, {"mount": DIGEST}, "repository:foo:pull,push", id="mount-without-from"
        ),
        pytest.param(
            "POST",
            MOUNT,
            {"from": "bar"},
            "repository:bar:pull repository:foo:pull,push",
            id="from-without-mount",
        ),
        pytest.param(
            "POST",
            MOUNT,
            {"mount": DIGEST, "from": ""},
            "repository:foo:pull,push",
            id="empty-from",
        ),
        pytest.param(
            "POST",
            MOUNT,
            {"mount": DIGEST, "from": "Not/Valid"},
            "repository:foo:pull,push",
            id="invalid-from",
        ),
        pytest.param(
            "POST",
            MOUNT,
            {"mount": DIGEST, "from": "a//b"},
            "repository:foo:pull,push",
            id="empty-segment-from",
        ),
        pytest.param(
            "POST",
            MOUNT,
            {"mount": DIGEST, "from": "foo"},
            "repository:foo:pull,push",
            id="from-itself",
        ),
        pytest.param("POST", MOUNT, {}, "repository:foo:pull,push", id="empty-query"),
        pytest.param("POST", MOUNT, None, "repository:foo:pull,push", id="no-query"),
        pytest.param(
            "PUT",
            "/v2/foo/blobs/uploads/abc",
            {"digest": DIGEST, "from": "bar"},
            "repository:foo:pull,push",
            id="from-ignored-on-upload-chunk",
        ),
        pytest.param(
            "GET",
            MOUNT,
            {"from": "bar"},
            "repository:foo:pull",
            id="from-ignored-on-get",
        ),
        pytest.param(
            "GET",
            "/v2/foo/tags/list",
            {"n": "10", "last": "x", "from": "bar"},
            "repository:foo:pull",
            id="other-query-ignored",
        ),
    ],
)
def test_mount(method: str, path: str, query: Mapping[str, str] | None, want: str) -> None:
    scope = infer_scope(method, path, query)
    assert scope is not None
    assert str(scope) == want


def test_results_are_canonical_and_repeatable() -> None:
    first = infer_scope("PATCH", "/v2/foo/blobs/uploads/abc")
    second = infer_scope("PATCH", "/v2/foo/blobs/uploads/abc")
    assert first == second
    assert first is not None
    assert str(first) == str(first.canonical())


# --- Properties --------------------------------------------------------------


@given(st.text(max_size=200), st.text(max_size=200), st.dictionaries(st.text(), st.text()))
def test_never_raises_on_arbitrary_text(method: str, path: str, query: dict[str, str]) -> None:
    for m in (method, "GET", "POST", "DELETE"):
        for p in (path, "/v2/" + path, "/v2/" + path + "/tags/list"):
            result = infer_scope(m, p, query)
            assert result is None or isinstance(result, Scope)


# An independent reading of the route table: one anchored pattern per route,
# tried after each "v2" segment in turn, as a router mounted under that
# prefix would.
_C = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?P<name>{_C}(?:/{_C})*)"
_DIG = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_ROUTE_PATTERNS = [
    re.compile(rf"{_NAME}/manifests/(?:{_TAG}|{_DIG})/?"),
    re.compile(rf"{_NAME}/blobs/{_DIG}/?"),
    re.compile(rf"{_NAME}/blobs/uploads/?"),
    re.compile(rf"{_NAME}/blobs/uploads/[a-zA-Z0-9_.=-]+/?"),
    re.compile(rf"{_NAME}/tags/list/?"),
    re.compile(rf"{_NAME}/referrers/{_DIG}/?"),
]
_ACTIONS = {"GET": "pull", "HEAD": "pull", "POST": "pull,push", "PUT": "pull,push"}
_ACTIONS |= {"PATCH": "pull,push", "DELETE": "delete"}


def reference_infer(method: str, path: str) -> Scope | None:
    segments = path.split("/")
    if method not in _ACTIONS or segments[0] != "":
        return None
    for i in range(1, len(segments)):
        if segments[i] != "v2":
            continue
        rest = "/".join(segments[i + 1 :])
        for pattern in _ROUTE_PATTERNS:
            m = pattern.fullmatch(rest)
            if m and len(m["name"]) <= 255:
                return parse_scope(f"repository:{m['name']}:{_ACTIONS[method]}")
        if rest in ("", "_catalog", "_catalog/"):
            if method not in ("GET", "HEAD"):
                return None
            return Scope() if rest == "" else new_scope(CATALOG_SCOPE)
    return None


_SEGMENTS = st.sampled_from(
    [
        "v2",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "referrers",
        "_catalog",
        "",
        "foo",
        "a.b",
        "a__b",
        "x-y",
        "Bad",
        "..",
        "latest",
        "abc=",
        DIGEST,
        "x" * 200,
    ]
)
_TAILS = st.sampled_from(
    [
        ["manifests", "latest"],
        ["manifests", DIGEST],
        ["blobs", DIGEST],
        ["blobs", "uploads"],
        ["blobs", "uploads", ""],
        ["blobs", "uploads", "abc="],
        ["tags", "list"],
        ["tags", "list", ""],
        ["referrers", DIGEST],
        ["_catalog"],
        [""],
        [],
    ]
)
# Mostly shaped like a route (prefix, v2, name, route), so that matches are
# common; the segments are still drawn from a pool with route words and
# invalid components in it.
_shaped = st.builds(
    lambda prefix, name, tail: [*prefix, "v2", *name, *tail],
    st.lists(_SEGMENTS, max_size=3),
    st.lists(_SEGMENTS, max_size=4),
    _TAILS,
)
route_like_paths = (st.lists(_SEGMENTS, max_size=9) | _shaped).map(lambda s: "/" + "/".join(s))


@settings(max_examples=500)
@given(st.sampled_from([*_ACTIONS, "OPTIONS"]), route_like_paths)
def test_agrees_with_a_direct_reading_of_the_route_table(method: str, path: str) -> None:
    assert infer_scope(method, path) == reference_infer(method, path)


@given(st.sampled_from(list(_ACTIONS)), route_like_paths)
def test_results_are_canonical(method: str, path: str) -> None:
    scope = infer_scope(method, path)
    if scope is not None:
        assert str(scope) == str(scope.canonical())
