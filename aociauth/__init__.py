"""aociauth: Docker/OCI registry authentication for aiohttp.

An asyncio-native port of the Go package ``cuelabs.dev/go/oci/ociregistry/ociauth``,
delivered as an aiohttp client middleware that uses the user's own
``docker login`` credentials::

    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=aociauth.load()))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        async with session.get("https://registry.example/v2/team/app/manifests/v1") as r:
            ...

The names below are the public API; each Go name has exactly one Python name
(see the mapping table in docs/go-api.md).
"""

from aociauth.config import Config, ConfigEntry, ConfigFile, Resolution, load, load_with_env
from aociauth.context import (
    RequestInfo,
    request_info_from_context,
    scope_from_context,
    with_request_info,
    with_scope,
)
from aociauth.errors import (
    AuthRequestError,
    BodyNotReplayableError,
    ChallengeError,
    ChallengeParseError,
    ConfigError,
    CredentialLookupError,
    HelperError,
    HelperNotFoundError,
    HelperTimeoutError,
    NoAuthError,
    OCIAuthError,
    RealmPolicyError,
    TokenResponseError,
    TokenServerError,
)
from aociauth.helpers import HelperRunner, exec_helper, exec_helper_with_env
from aociauth.middleware import AuthMiddleware, new_std_transport
from aociauth.params import AuthStats, StdTransportParams
from aociauth.realm import RealmPolicy
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

__all__ = [
    "ACTION_PULL",
    "ACTION_PUSH",
    "CATALOG_SCOPE",
    "TYPE_REGISTRY",
    "TYPE_REPOSITORY",
    "AuthMiddleware",
    "AuthRequestError",
    "AuthStats",
    "BodyNotReplayableError",
    "ChallengeError",
    "ChallengeParseError",
    "Config",
    "ConfigEntry",
    "ConfigError",
    "ConfigFile",
    "CredentialLookupError",
    "HelperError",
    "HelperNotFoundError",
    "HelperRunner",
    "HelperTimeoutError",
    "NoAuthError",
    "OCIAuthError",
    "RealmPolicy",
    "RealmPolicyError",
    "RequestInfo",
    "Resolution",
    "ResourceScope",
    "Scope",
    "StdTransportParams",
    "TokenResponseError",
    "TokenServerError",
    "exec_helper",
    "exec_helper_with_env",
    "load",
    "load_with_env",
    "new_scope",
    "new_std_transport",
    "parse_scope",
    "request_info_from_context",
    "scope_from_context",
    "unlimited_scope",
    "with_request_info",
    "with_scope",
]

#: The one place the version is written: pyproject.toml reads it (hatchling's dynamic version).
__version__ = "0.1.0"
