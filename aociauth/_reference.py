"""The distribution reference grammar: registry hosts, repository names, tags, digests. Pure.

One home for the patterns scope inference, the command line and the
in-process registry match, so they cannot drift apart. Sources: distribution's
``reference/regexp.go`` (names, tags, domains), go-digest's ``DigestRegexp``
and the OCI image specification's descriptor rules (digests).

Where the users need different strictness, the difference is a choice of
function here, not a pattern of their own:

* routes (:mod:`aociauth.inference`, the in-process registry's router) match
  :data:`DIGEST`, the grammar alone, as distribution's router does: it matches
  ``digest.DigestRegexp`` and asks for authorization before any handler
  checks the algorithm;
* a reference the user types (``aociauth fetch``) must be :func:`is_digest`:
  the grammar, and the registered encoding for a registered algorithm, so
  ``sha256:ABC`` is refused before a request is made;
* a blob the in-process registry serves must be :func:`is_registered_digest`,
  as distribution answers ``DIGEST_INVALID`` for an algorithm it cannot
  verify.
"""

from __future__ import annotations

import re

__all__ = [
    "COMPONENT",
    "DIGEST",
    "NAME",
    "NAME_MAX",
    "TAG",
    "is_digest",
    "is_domain",
    "is_name_component",
    "is_registered_digest",
    "is_repository_name",
    "is_tag",
]

#: One path component of a repository name. distribution spells its separator
#: ``[-]*``, which lets it be empty and makes a backtracking matcher
#: exponential on a long near-miss; ``-+`` matches the same strings.
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: A repository name: components joined by ``/`` (without the length limit).
NAME = rf"{COMPONENT}(?:/{COMPONENT})*"
#: A tag: ``reference.TagRegexp``, ``[\w][\w.-]{0,127}``, where ``\w`` is
#: ASCII as in Go's RE2 (Python's ``\w`` would take any Unicode letter).
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
#: A digest by the grammar alone: ``algorithm ":" encoded``, the algorithm's
#: components ``[a-z0-9]+`` joined by one of ``+._-`` (go-digest's DigestRegexp).
DIGEST = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
#: distribution's NameTotalLengthMax.
NAME_MAX = 255

# The OCI image specification's registered algorithms and their encodings.
_REGISTERED = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}

_COMPONENT_RE = re.compile(COMPONENT)
_TAG_RE = re.compile(TAG)
_DIGEST_RE = re.compile(DIGEST)
# distribution's domain grammar, with a port of at most five digits (one that
# can be dialled) and an IPv6 literal in brackets.
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(
    rf"(?:\[[0-9A-Fa-f:.]+\]|{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*)(?::[0-9]{{1,5}})?"
)


def is_name_component(text: str) -> bool:
    """Whether ``text`` is one path component of a repository name."""
    return _COMPONENT_RE.fullmatch(text) is not None


def is_repository_name(text: str) -> bool:
    """Whether ``text`` is a repository name: valid components, at most 255 characters."""
    if not text or len(text) > NAME_MAX:
        return False
    return all(_COMPONENT_RE.fullmatch(c) for c in text.split("/"))


def is_tag(text: str) -> bool:
    """Whether ``text`` is a tag: an ASCII word character, then up to 127 of ``\\w.-``."""
    return _TAG_RE.fullmatch(text) is not None


def is_digest(text: str) -> bool:
    """Whether ``text`` is a digest a client may send.

    The grammar (:data:`DIGEST`) and, for a registered algorithm (sha256,
    sha512), its exact encoding: lowercase hex of 64 or 128 digits. An
    unregistered algorithm is taken on the grammar alone, as the OCI image
    specification lets registries support others.
    """
    if _DIGEST_RE.fullmatch(text) is None:
        return False
    algorithm, _, encoded = text.partition(":")
    pattern = _REGISTERED.get(algorithm)
    return pattern is None or pattern.fullmatch(encoded) is not None


def is_registered_digest(text: str) -> bool:
    """Whether ``text`` is a digest of a registered algorithm with its exact encoding."""
    algorithm, _, encoded = text.partition(":")
    pattern = _REGISTERED.get(algorithm)
    return pattern is not None and pattern.fullmatch(encoded) is not None


def is_domain(text: str) -> bool:
    """Whether ``text`` is a registry host: ``name[:port]`` or ``[ipv6][:port]``."""
    return _DOMAIN_RE.fullmatch(text) is not None
