"""``WWW-Authenticate`` parsing: pure, linear-time, bounded.

A registry answers an unauthorised request with a 401 and one or more
``WWW-Authenticate`` header lines. Each line holds one or more challenges
(RFC 9110 §11.6.1, formerly RFC 7235 §4.1)::

    WWW-Authenticate = 1#challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )

The Go original reads one challenge per line and ignores a line it cannot
parse. This module reads every challenge of every line, still skips a line it
cannot parse, and drops a challenge that repeats a parameter (RFC 6750 §3:
``realm`` "MUST NOT appear more than once"), because a repeated ``realm`` is
how a hostile header would smuggle a second token endpoint past a parser that
keeps the last one.

The scanner is hand-written and moves forward one character at a time, so its
cost is linear in the input, and the input is bounded
(:data:`MAX_HEADER_LENGTH`, :data:`MAX_PARAMS`, :data:`MAX_CHALLENGES`,
:data:`MAX_HEADER_LINES`) before any work is done.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from aociauth.errors import ChallengeParseError

__all__ = [
    "MAX_CHALLENGES",
    "MAX_HEADER_LENGTH",
    "MAX_HEADER_LINES",
    "MAX_PARAMS",
    "Challenge",
    "parse_challenge_header",
    "parse_challenges",
    "select_challenge",
]

#: Longest header line parsed, in characters. aiohttp's client refuses header
#: fields over 8190 bytes by default; twice that leaves room for sessions that
#: raise the limit while keeping hostile input from being scanned at all.
MAX_HEADER_LENGTH = 16 * 1024

#: Most auth-params one header line may carry (all its challenges together).
#: Real registries send at most five (realm, service, scope, error, ...).
MAX_PARAMS = 64

#: Most challenges one header line may carry. Real servers send one or two.
MAX_CHALLENGES = 16

#: Most header lines :func:`parse_challenges` reads; later lines are ignored.
#: aiohttp allows 128 header fields in all by default.
MAX_HEADER_LINES = 32

#: Longest parameter value :func:`repr` shows in full.
_REPR_VALUE_LIMIT = 80

# RFC 9110 §5.6.2: tchar. The same set as the Go original's RFC 2616 token.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# RFC 9110 §11.2: token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_T68CHAR = frozenset("-._~+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# RFC 9110 §5.6.3: OWS / BWS / RWS are made of SP and HTAB only.
_WS = frozenset(" \t")

_SUPPORTED_SCHEMES = ("basic", "bearer")


def _is_token(s: str) -> bool:
    return bool(s) and all(c in _TCHAR for c in s)


def _is_token68(s: str) -> bool:
    body = s.rstrip("=")
    return bool(body) and all(c in _T68CHAR for c in body)


def _is_quotable(c: str) -> bool:
    # RFC 9110 §5.6.4: qdtext and quoted-pair allow HTAB, SP, VCHAR and
    # obs-text; every other control character is unrepresentable.
    return c == "\t" or (c >= " " and c != "\x7f")


def _truncate(value: str) -> str:
    if len(value) <= _REPR_VALUE_LIMIT:
        return value
    return f"{value[:_REPR_VALUE_LIMIT]}...({len(value)} chars)"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@dataclass(frozen=True, eq=True)
class Challenge:
    """One authentication challenge from a ``WWW-Authenticate`` header.

    ``scheme`` and the parameter names are lower-cased, since both are
    case-insensitive (RFC 9110 §11.1, §11.2); parameter values are kept with
    their escapes removed. ``params`` is read-only. A challenge in token68 form
    (``Negotiate abc==``) has no params and its credentials in ``token68``.

    ``duplicate_params`` names the parameters the header repeated; such a
    challenge is unusable (``params`` then holds the first value of each).
    Challenges are values: immutable, hashable, equal when their parts are.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None
    duplicate_params: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not _is_token(self.scheme):
            raise ValueError("challenge scheme must be an RFC 9110 token")
        if self.token68 is not None and not _is_token68(self.token68):
            raise ValueError("challenge token68 must match the RFC 9110 token68 syntax")
        if self.token68 is not None and self.params:
            raise ValueError("a challenge has either a token68 or params, not both")
        lowered: dict[str, str] = {}
        for name, value in self.params.items():
            if not _is_token(name):
                raise ValueError("challenge parameter names must be RFC 9110 tokens")
            if not all(_is_quotable(c) for c in value):
                raise ValueError("challenge parameter values cannot hold control characters")
            key = name.lower()
            if key in lowered:
                raise ValueError(f"challenge parameter {key!r} given twice")
            lowered[key] = value
        # Frozen dataclass: normalising in place needs object.__setattr__.
        object.__setattr__(self, "scheme", self.scheme.lower())
        object.__setattr__(self, "params", types.MappingProxyType(lowered))
        object.__setattr__(
            self, "duplicate_params", frozenset(n.lower() for n in self.duplicate_params)
        )

    def __hash__(self) -> int:
        return hash(
            (self.scheme, frozenset(self.params.items()), self.token68, self.duplicate_params)
        )

    def __repr__(self) -> str:
        # Challenges are not secret, but a hostile header can make them huge.
        shown = {name: _truncate(value) for name, value in self.params.items()}
        parts = [repr(self.scheme), repr(shown)]
        if self.token68 is not None:
            parts.append(f"token68={_truncate(self.token68)!r}")
        if self.duplicate_params:
            parts.append(f"duplicate_params={sorted(self.duplicate_params)!r}")
        return f"Challenge({', '.join(parts)})"

    def __str__(self) -> str:
        """The challenge as a ``WWW-Authenticate`` value (every value quoted)."""
        if self.token68 is not None:
            return f"{self.scheme} {self.token68}"
        if not self.params:
            return self.scheme
        params = ", ".join(f"{name}={_quote(value)}" for name, value in self.params.items())
        return f"{self.scheme} {params}"

    @property
    def usable(self) -> bool:
        """Whether the transport may act on this challenge at all.

        It must be Basic or Bearer, in auth-param form (the Go original cannot
        even parse a token68 challenge), with no repeated parameter.
        """
        return (
            self.scheme in _SUPPORTED_SCHEMES and self.token68 is None and not self.duplicate_params
        )

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter: for Bearer, the token endpoint's URL."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter, passed on to the token endpoint."""
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        """The ``scope`` parameter: the access the registry wants, as a scope string."""
        return self.params.get("scope")


class _Scanner:
    """A forward-only cursor over one header line.

    Every method advances ``pos`` or fails; nothing backtracks, so parsing is
    linear in the length of the line.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.params_seen = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, what: str) -> ChallengeParseError:
        # The message gives a position, never the header text: the header is
        # not secret, but it can be huge and is attacker-controlled.
        return ChallengeParseError(
            f"malformed WWW-Authenticate header: {what} at offset {self.pos}", step="challenge"
        )

    def skip_ws(self) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos - start

    def skip_empty_elements(self) -> None:
        # RFC 9110 §5.6.1: a recipient accepts empty list elements ("a, , b").
        self.skip_ws()
        while self.peek() == ",":
            self.pos += 1
            self.skip_ws()

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def token68_here(self) -> str | None:
        """Consume a token68 if one starts here and ends an element; else move nothing.

        The look-ahead only reads characters a token68 may hold, so after a
        failed attempt the caller rescans at most that run once more: still
        linear overall.
        """
        end = self.pos
        text = self.text
        while end < len(text) and text[end] in _T68CHAR:
            end += 1
        if end == self.pos:
            return None
        while end < len(text) and text[end] == "=":
            end += 1
        after = end
        while after < len(text) and text[after] in _WS:
            after += 1
        if after < len(text) and text[after] != ",":
            return None
        value = text[self.pos : end]
        self.pos = end
        return value

    def quoted_string(self) -> str:
        # RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
        self.pos += 1  # the opening quote
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                self.pos += 1
                if self.pos >= len(text):
                    raise self.fail("backslash at end of quoted string")
                c = text[self.pos]
            if not _is_quotable(c):
                raise self.fail("control character in quoted string")
            out.append(c)
            self.pos += 1
        raise self.fail("unterminated quoted string")

    def param_value(self) -> str:
        if self.peek() == '"':
            return self.quoted_string()
        value = self.token()
        if not value:
            raise self.fail("expected a token or quoted string after '='")
        return value

    def count_param(self) -> None:
        self.params_seen += 1
        if self.params_seen > MAX_PARAMS:
            raise self.fail(f"more than {MAX_PARAMS} parameters")


def _add_param(params: dict[str, str], duplicates: set[str], name: str, value: str) -> None:
    key = name.lower()
    if key in params:
        duplicates.add(key)
    else:
        params[key] = value


def _next_element(sc: _Scanner) -> tuple[str, bool] | None:
    """Move past the ``,`` that ends a list element to the next element.

    Returns None at the end of the line, else the element's leading token and
    whether it is a parameter name (followed by ``=``, which is consumed) or
    the auth-scheme of the next challenge (the cursor stays right after it).
    """
    sc.skip_ws()
    if sc.at_end():
        return None
    if sc.peek() != ",":
        raise sc.fail("expected ','")
    sc.skip_empty_elements()
    if sc.at_end():
        return None
    word = sc.token()
    if not word:
        raise sc.fail("expected a parameter name or an auth scheme")
    after_word = sc.pos
    sc.skip_ws()
    if sc.peek() == "=":
        sc.pos += 1
        return word, True
    # A token not followed by "=" can only start a new challenge.
    sc.pos = after_word
    return word, False


def _parse_challenge(sc: _Scanner, scheme: str) -> tuple[Challenge, str | None]:
    """Read what follows ``scheme``: nothing, a token68 or auth-params.

    Returns the challenge and the scheme of the next one on the line (already
    consumed), or None at the end of the line.
    """
    had_space = sc.skip_ws() > 0
    following: tuple[str, bool] | None
    if sc.at_end() or sc.peek() == ",":
        # "Basic, Bearer realm=x", or "Bearer ,realm=x": the #auth-param list
        # may start with empty elements (RFC 9110 §5.6.1).
        following = _next_element(sc)
    elif not had_space:
        raise sc.fail("expected whitespace after the auth scheme")
    else:
        token68 = sc.token68_here()
        if token68 is not None:
            following = _next_element(sc)
            if following is not None and following[1]:
                raise sc.fail("parameter after a token68 challenge")
            return Challenge(scheme, token68=token68), None if following is None else following[0]
        name = sc.token()
        if not name:
            raise sc.fail("expected a parameter name")
        sc.skip_ws()
        if sc.peek() != "=":
            raise sc.fail("expected '=' after a parameter name")
        sc.pos += 1
        following = (name, True)

    params: dict[str, str] = {}
    duplicates: set[str] = set()
    while following is not None and following[1]:
        sc.skip_ws()
        sc.count_param()
        _add_param(params, duplicates, following[0], sc.param_value())
        following = _next_element(sc)
    challenge = Challenge(scheme, params, duplicate_params=frozenset(duplicates))
    return challenge, None if following is None else following[0]


def parse_challenge_header(value: str) -> tuple[Challenge, ...]:
    """Parse one ``WWW-Authenticate`` header line into its challenges.

    Accepts several comma-separated challenges (``Basic realm="a", Bearer
    realm="b",service="c"``), quoted values with ``\\`` escapes, unquoted
    token values (gcr.io sends ``service=gcr.io``), the token68 form, any case
    in schemes and parameter names, optional whitespace around ``=`` and
    commas, and empty list elements. A repeated parameter is recorded in
    :attr:`Challenge.duplicate_params`, not resolved.

    Raises :class:`~aociauth.errors.ChallengeParseError`, and nothing else,
    when the line is malformed, empty, longer than :data:`MAX_HEADER_LENGTH`,
    or carries more than :data:`MAX_PARAMS` parameters or
    :data:`MAX_CHALLENGES` challenges.
    """
    if not isinstance(value, str):
        raise ChallengeParseError("WWW-Authenticate header is not text", step="challenge")
    if len(value) > MAX_HEADER_LENGTH:
        raise ChallengeParseError(
            f"WWW-Authenticate header longer than {MAX_HEADER_LENGTH} characters",
            step="challenge",
        )
    sc = _Scanner(value)
    sc.skip_empty_elements()
    if sc.at_end():
        raise sc.fail("no challenge")
    scheme: str | None = sc.token()
    if not scheme:
        raise sc.fail("expected an auth scheme")
    challenges: list[Challenge] = []
    while scheme is not None:
        if len(challenges) == MAX_CHALLENGES:
            raise sc.fail(f"more than {MAX_CHALLENGES} challenges")
        challenge, scheme = _parse_challenge(sc, scheme)
        challenges.append(challenge)
    return tuple(challenges)


def _parse_lines(values: Iterable[str]) -> Iterator[Challenge]:
    for line in itertools.islice(values, MAX_HEADER_LINES):
        try:
            parsed = parse_challenge_header(line)
        except ChallengeParseError:
            # As in the original, an unparseable header is ignored.
            continue
        for challenge in parsed:
            if not challenge.duplicate_params:
                yield challenge


def parse_challenges(values: Iterable[str]) -> tuple[Challenge, ...]:
    """Parse every ``WWW-Authenticate`` line of a response.

    A line that cannot be parsed is skipped, as the original ignores an
    unparseable header; a challenge that repeats a parameter is dropped as a
    whole (RFC 6750 §3); lines after the first :data:`MAX_HEADER_LINES` are
    not read. Never raises for string input.
    """
    return tuple(_parse_lines(values))


def select_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Choose the challenge the transport acts on, or None if none is usable.

    Basic is preferred when both Basic and Bearer are offered, as in the Go
    original; otherwise the first Bearer. Unknown schemes, token68 challenges
    and challenges with a repeated parameter are never chosen.
    """
    first_bearer: Challenge | None = None
    for challenge in challenges:
        if not challenge.usable:
            continue
        if challenge.scheme == "basic":
            return challenge
        if first_bearer is None:
            first_bearer = challenge
    return first_bearer
