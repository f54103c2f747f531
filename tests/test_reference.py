"""The reference grammar's one home, and the strictness each of its users chose."""

from __future__ import annotations

import pytest

from aociauth._reference import (
    is_digest,
    is_domain,
    is_registered_digest,
    is_repository_name,
    is_tag,
)
from aociauth.cli import CLIError, parse_reference
from aociauth.inference import infer_scope
from aociauth.login import login_target
from aociauth.testing.registry import _route

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "0f" * 64

# (text, grammar of the routes, is_digest: what a user may type, is_registered_digest)
DIGESTS = [
    (SHA256, True, True, True),
    (SHA512, True, True, True),
    # A registered algorithm's encoding is exact: lowercase hex, its length.
    ("sha256:" + "A" * 64, True, False, False),
    ("sha256:" + "a" * 63, True, False, False),
    ("sha256:" + "a" * 65, True, False, False),
    ("sha512:" + "a" * 64, True, False, False),
    # Unregistered algorithms: the grammar alone lets them through, a
    # registry that can verify none of them refuses them.
    ("sha384:" + "a" * 96, True, True, False),
    ("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", True, True, False),
    ("blake3:" + "b" * 64, True, True, False),
    ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", True, True, False),
    # algorithm components are [a-z0-9]+ joined by one of + . _ -
    ("3x:abc", True, True, False),
    ("a..b:abc", False, False, False),
    ("a-:abc", False, False, False),
    ("SHA256:" + "a" * 64, False, False, False),
    ("sha256", False, False, False),
    ("sha256:", False, False, False),
    (":abc", False, False, False),
    ("sha256:abc/def", False, False, False),
    ("sha256:abc+def", False, False, False),
    ("", False, False, False),
]


@pytest.mark.parametrize(("text", "grammar", "typed", "registered"), DIGESTS)
def test_a_digest_is_judged_by_the_strictness_its_user_chose(
    text: str, grammar: bool, typed: bool, registered: bool
) -> None:
    assert is_digest(text) is typed
    assert is_registered_digest(text) is registered
    # The routes (scope inference, the in-process registry) match the grammar.
    blob_route = _route(f"/v2/team/app/blobs/{text}")
    assert (blob_route is not None and blob_route[0] == "blob") is grammar
    assert (infer_scope("GET", f"/v2/team/app/blobs/{text}") is not None) is grammar


@pytest.mark.parametrize(("text", "grammar", "typed", "registered"), DIGESTS)
def test_the_command_line_takes_a_digest_a_registry_could_serve(
    text: str, grammar: bool, typed: bool, registered: bool
) -> None:
    if not text:
        return  # "app@" is an empty digest: no digest at all
    reference = f"127.0.0.1:5000/app@{text}"
    if typed:
        assert parse_reference(reference).digest == text
    else:
        with pytest.raises(CLIError, match="malformed digest"):
            parse_reference(reference)


# (text, matches the grammar, is a name: the grammar and at most 255 characters)
NAMES = [
    ("a", True, True),
    ("team/app", True, True),
    ("a.b_c__d-e---f/g", True, True),
    ("a/b/c/d/e", True, True),
    ("a" * 255, True, True),
    ("a" * 256, True, False),
    ("/".join(["ab"] * 85), True, True),  # 254 characters
    ("/".join(["ab"] * 86), True, False),  # 257 characters
    ("Team/app", False, False),
    ("a//b", False, False),
    ("a/", False, False),
    ("/a", False, False),
    ("a___b", False, False),
    ("a._b", False, False),
    ("-a", False, False),
    ("a-", False, False),
    ("a..b", False, False),
    ("café", False, False),
    ("", False, False),
]


@pytest.mark.parametrize(("text", "grammar", "valid"), NAMES)
def test_a_repository_name_follows_distribution(text: str, grammar: bool, valid: bool) -> None:
    assert is_repository_name(text) is valid
    assert (infer_scope("GET", f"/v2/{text}/tags/list") is not None) is valid
    # The in-process registry's router matches the grammar; distribution's
    # length limit is the token server's and the registry's to enforce.
    assert (_route(f"/v2/{text}/tags/list") is not None) is grammar


TAGS = [
    ("latest", True),
    ("v1.2.3-rc_1", True),
    ("_x", True),
    ("A" * 128, True),
    ("A" * 129, False),
    (".x", False),
    ("-x", False),
    # \w is ASCII, as in Go's RE2: Python's \w would take these.
    ("café", False),
    ("٣", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "valid"), TAGS)
def test_a_tag_is_an_ascii_word(text: str, valid: bool) -> None:
    assert is_tag(text) is valid
    route = _route(f"/v2/team/app/manifests/{text}")
    assert (route is not None) is valid
    assert (infer_scope("GET", f"/v2/team/app/manifests/{text}") is not None) is valid


DOMAINS = [
    ("localhost", True),
    ("reg.example", True),
    ("reg.example:5000", True),
    ("REG.Example:443", True),
    ("127.0.0.1:65535", True),
    ("[::1]:5000", True),
    ("[::1]", True),
    ("a-b.c", True),
    # a port of more than five digits cannot be dialled
    ("reg.example:123456", False),
    ("reg.example:", False),
    ("-x", False),
    ("x-.example", False),
    ("a..b", False),
    ("reg.example;rm -rf ~", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "valid"), DOMAINS)
def test_a_registry_host_is_a_domain_with_a_port_that_can_be_dialled(
    text: str, valid: bool
) -> None:
    assert is_domain(text) is valid
    if valid:
        assert login_target(text).host == text.lower()
    else:
        with pytest.raises(ValueError, match="invalid registry"):
            login_target(text)
