"""The zoo's registries: one frozen profile of quirks per public registry, each one cited.

A :class:`RegistryProfile` says how a registry authenticates (its token
endpoint, service, GET/POST support, the token field, whether it sends
``expires_in``), who may pull anonymously, where blob downloads are
redirected and how those URLs are signed, and the form its users' Docker
configuration takes (the ``auths`` key, the user name, the credential
helper). :class:`~aociauth.testing.zoo.Zoo` turns a profile into running
servers; nothing here does I/O.

Each quirk carries its source: the registry's documentation, its source
code, or the issue tracker where a client met it. Where a detail is not in
any public source the zoo could check, the source says ``assumed:`` and why
that choice is harmless to what the flows prove.
"""

# token_host, token_path and token_field are endpoints and field names, not secrets:
# ruff: noqa: S105, S106

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aociauth.testing.registry import BlobRedirectStyle
from aociauth.testing.tokenserver import ScopeReading, TokenField

__all__ = [
    "ACR",
    "ARTIFACT_REGISTRY",
    "DOCKER_HUB",
    "ECR",
    "GCR",
    "GHCR",
    "GITLAB",
    "HARBOR",
    "PROFILES",
    "QUAY",
    "CredentialForm",
    "Quirk",
    "RegistryProfile",
]


@dataclass(frozen=True)
class Quirk:
    """One way a registry differs from the distribution reference, and where that is said."""

    what: str
    source: str


CredentialKind = Literal["auths", "namespaces", "identitytoken", "helper"]


@dataclass(frozen=True)
class CredentialForm:
    """How a registry's users hold credentials in ``config.json``.

    * ``"auths"``: ``auths[key] = {"auth": base64(user:password)}``, as
      ``docker login`` writes it.
    * ``"namespaces"``: one ``auths`` entry per namespace (``quay.io/acme``),
      each with its own robot account (containers/image's per-namespace keys).
    * ``"identitytoken"``: ``auths[key]`` with an ``identitytoken`` (an OAuth2
      refresh token) and ``user`` as the placeholder user name, as
      ``az acr login`` writes it.
    * ``"helper"``: ``credHelpers[key] = helper``; the helper prints ``user``
      and a secret (``<token>`` as the user makes the secret a refresh token).
    """

    kind: CredentialKind
    key: str
    user: str
    helper: str = ""


@dataclass(frozen=True)
class RegistryProfile:
    """A public registry as the zoo emulates it; see the module docstring.

    ``registry_host`` serves the distribution API. With ``auth="bearer"``,
    the token endpoint is ``https://<token_host><token_path>`` (``token_host``
    empty: the registry's own host). ``post`` is what a token ``POST`` gets:
    ``"oauth2"`` (the OAuth2 grants) or the status of a refusal (404, 405).
    ``blob_host`` empty means blobs are served by the registry itself.
    ``namespaces`` are where the private repositories live; a ``"namespaces"``
    credential form gives each its own robot. ``helper_credential`` is the
    helper-based form for the expired-credentials flow, when the registry has
    a credential helper whose answers expire.
    """

    key: str
    name: str
    registry_host: str
    auth: Literal["bearer", "basic"]
    service: str
    credential: CredentialForm
    namespaces: tuple[str, ...]
    quirks: tuple[Quirk, ...]
    token_host: str = ""
    token_path: str = "/token"
    post: Literal["oauth2", 404, 405] = "oauth2"
    token_field: TokenField = "both"
    expires_in: int | None = 300
    opaque_tokens: bool = False
    scope_reading: ScopeReading = "all"
    challenge_scope: bool = True
    anonymous_namespace: str = ""
    blob_host: str = ""
    blob_path: str = ""
    blob_style: BlobRedirectStyle = "s3"
    mount: bool = True
    pull_limit: int | None = None
    basic_service: str | None = None
    basic_realm: str = "basic-realm"
    harbor_mixed: bool = False
    helper_credential: CredentialForm | None = None
    note: str = ""

    @property
    def realm_host(self) -> str:
        """The host of the token endpoint (the registry's own when it serves it)."""
        return self.token_host or self.registry_host

    @property
    def realm(self) -> str:
        """The realm the Bearer challenge announces."""
        return f"https://{self.realm_host}{self.token_path}"

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host name the registry's servers answer on."""
        names = [self.registry_host, self.realm_host, self.blob_host]
        return tuple(dict.fromkeys(n for n in names if n))

    @property
    def own_hosts(self) -> frozenset[str]:
        """The hosts that may see this registry's credentials and tokens: registry and realm."""
        return frozenset({self.registry_host, self.realm_host})


DOCKER_HUB = RegistryProfile(
    key="dockerhub",
    name="Docker Hub",
    registry_host="registry-1.docker.io",
    token_host="auth.docker.io",
    token_path="/token",
    auth="bearer",
    service="registry.docker.io",
    token_field="both",
    expires_in=300,
    anonymous_namespace="library",
    blob_host="production.cloudflare.docker.com",
    blob_style="cloudflare",
    pull_limit=100,
    credential=CredentialForm("auths", "https://index.docker.io/v1/", "acmebot"),
    namespaces=("acme",),
    quirks=(
        Quirk(
            "registry on registry-1.docker.io, tokens from auth.docker.io/token, "
            'service "registry.docker.io"',
            "https://distribution.github.io/distribution/spec/auth/token/ (the worked example)",
        ),
        Quirk(
            "token response carries both token and access_token, expires_in 300, issued_at",
            "https://distribution.github.io/distribution/spec/auth/token/ ; containerd#6377 "
            "(anonymous tokens last about 300 s)",
        ),
        Quirk(
            "config key https://index.docker.io/v1/ as docker login writes it",
            "docker/cli cli/config/configfile (registry.IndexServer)",
        ),
        Quirk(
            "anonymous pulls of library/ images",
            "https://docs.docker.com/docker-hub/usage/pulls/",
        ),
        Quirk(
            "blob GETs redirect to production.cloudflare.docker.com",
            "https://docs.docker.com/desktop/setup/allow-list/ (the CDN host on the allow list)",
        ),
        Quirk(
            "the CDN URL keeps distribution's storage path and a verify= signature",
            "assumed: the shape seen in client logs; no flow depends on it beyond carrying "
            "a signature that must not leak",
        ),
        Quirk(
            "manifest GETs count against a pull limit: RateLimit-Limit/-Remaining "
            '"N;w=21600", Docker-RateLimit-Source, then 429 TOOMANYREQUESTS',
            "https://docs.docker.com/docker-hub/usage/pulls/ ; regclient types/ratelimit.go",
        ),
    ),
)

GHCR = RegistryProfile(
    key="ghcr",
    name="GHCR",
    registry_host="ghcr.io",
    token_path="/token",
    auth="bearer",
    service="ghcr.io",
    post=405,
    token_field="token",
    expires_in=None,
    opaque_tokens=True,
    anonymous_namespace="acme-public",
    blob_host="pkg-containers.githubusercontent.com",
    blob_path="/ghcr1/blobs",
    blob_style="azure",
    credential=CredentialForm("auths", "ghcr.io", "acme-bot"),
    namespaces=("acme",),
    quirks=(
        Quirk("token endpoint on its own host, ghcr.io/token", "oras-project/oras#968"),
        Quirk(
            "POST /token answers 405: no OAuth2 grants, no refresh tokens",
            "oras-project/oras#968 ; containerd remotes/docker/auth (405 fallback)",
        ),
        Quirk(
            'the token response has only "token", no expires_in; tokens are opaque, not JWTs',
            "oras-project/rust-oci-client PR #245 ; AlexGustafsson/cupdate#32",
        ),
        Quirk(
            "public packages pull anonymously with an anonymous token",
            "https://docs.github.com/en/packages/working-with-a-github-packages-registry/"
            "working-with-the-container-registry",
        ),
        Quirk(
            "config key ghcr.io with a user name and a personal access token",
            "https://docs.github.com/en/packages/working-with-a-github-packages-registry/"
            "working-with-the-container-registry#authenticating-with-a-personal-access-token-classic",
        ),
        Quirk(
            "blob downloads redirect to pkg-containers.githubusercontent.com with a SAS signature",
            "https://docs.github.com/en/enterprise-cloud@latest/organizations/"
            "managing-organization-settings/about-github-packages-access (allow list); "
            "assumed: the SAS query shape",
        ),
    ),
)

_GCLOUD = CredentialForm("helper", "gcr.io", "_dcgcloud_token", helper="gcloud")

GCR = RegistryProfile(
    key="gcr",
    name="GCR",
    registry_host="gcr.io",
    token_path="/v2/token",
    auth="bearer",
    service="gcr.io",
    post=404,
    token_field="token",
    expires_in=3600,
    anonymous_namespace="google-containers",
    blob_host="storage.googleapis.com",
    blob_path="/artifacts.acme-project.appspot.com/containers/images",
    blob_style="gcs",
    credential=_GCLOUD,
    helper_credential=_GCLOUD,
    namespaces=("acme-project",),
    quirks=(
        Quirk(
            "token endpoint gcr.io/v2/token, service gcr.io",
            "https://cloud.google.com/container-registry/docs/advanced-authentication",
        ),
        Quirk(
            "POST to the token endpoint answers 404",
            'containerd remotes/docker/authorizer.go ("GCR is known to return 404")',
        ),
        Quirk(
            "credentials from docker-credential-gcloud: user _dcgcloud_token, an access token "
            "that lives an hour",
            "googlecloudsdk docker credential helper (gcloud auth configure-docker); "
            "https://cloud.google.com/artifact-registry/docs/docker/authentication",
        ),
        Quirk(
            "public images (gcr.io/google-containers) pull anonymously",
            "https://cloud.google.com/container-registry/docs/access-control",
        ),
        Quirk(
            "layers live in a GCS bucket; blob GETs redirect to a signed "
            "storage.googleapis.com URL",
            "containerd#1318 (GCR's single-use Location URLs) ; "
            "https://cloud.google.com/storage/docs/access-control/signed-urls",
        ),
    ),
)

ARTIFACT_REGISTRY = RegistryProfile(
    key="artifact-registry",
    name="Artifact Registry",
    registry_host="us-docker.pkg.dev",
    token_path="/v2/token",
    auth="bearer",
    service="us-docker.pkg.dev",
    post=404,
    token_field="token",
    expires_in=3600,
    anonymous_namespace="acme-project/public",
    blob_host="storage.googleapis.com",
    blob_path="/artifact-registry-us",
    blob_style="gcs",
    credential=CredentialForm("helper", "us-docker.pkg.dev", "_dcgcloud_token", "gcloud"),
    helper_credential=CredentialForm("helper", "us-docker.pkg.dev", "_dcgcloud_token", "gcloud"),
    namespaces=("acme-project/docker",),
    quirks=(
        Quirk(
            "per-location hosts (us-docker.pkg.dev), repositories PROJECT/REPOSITORY/IMAGE",
            "https://cloud.google.com/artifact-registry/docs/docker/names",
        ),
        Quirk(
            "credentials from gcloud's helper (credHelpers us-docker.pkg.dev: gcloud)",
            "https://cloud.google.com/artifact-registry/docs/docker/authentication",
        ),
        Quirk(
            "token endpoint and POST 404 as GCR",
            "assumed: Artifact Registry serves gcr.io since the GCR shutdown, with GCR's "
            "token service (https://cloud.google.com/artifact-registry/docs/transition/"
            "transition-from-gcr)",
        ),
        Quirk(
            "public repositories (allUsers reader) pull anonymously",
            "https://cloud.google.com/artifact-registry/docs/access-control#public",
        ),
        Quirk(
            "blob GETs redirect to signed Cloud Storage URLs",
            "assumed: as GCR; a same-host download path would only make the audit easier",
        ),
    ),
)

_ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
_ECR_LOGIN = CredentialForm("helper", _ECR_HOST, "AWS", helper="ecr-login")

ECR = RegistryProfile(
    key="ecr",
    name="ECR",
    registry_host=_ECR_HOST,
    auth="basic",
    service="ecr.amazonaws.com",
    basic_realm=f"https://{_ECR_HOST}/",
    basic_service="ecr.amazonaws.com",
    blob_host="prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com",
    blob_style="s3",
    credential=_ECR_LOGIN,
    helper_credential=_ECR_LOGIN,
    namespaces=("team",),
    quirks=(
        Quirk(
            'Basic challenge on the registry: Basic realm="https://<host>/",'
            'service="ecr.amazonaws.com"; no token server',
            "SgtSilvio/gradle-oci PR #145 ; oras-py auth/ecr.py",
        ),
        Quirk(
            "credentials from docker-credential-ecr-login: user AWS, a token valid 12 hours",
            "https://github.com/awslabs/amazon-ecr-credential-helper ; "
            "https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html",
        ),
        Quirk(
            'an expired token is answered 403 "Your authorization token has expired", '
            "with no challenge",
            "flipt-io/flipt#3043 ; kcl-lang/kpm PR #698 ; bazel-contrib/rules_img#715",
        ),
        Quirk("no anonymous pulls on private registries", "ECR user guide, registry_auth.html"),
        Quirk(
            "layers download from S3 through pre-signed URLs (the starport layer bucket)",
            "https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html "
            "(the S3 gateway endpoint ECR needs for layers)",
        ),
        Quirk(
            "cross-repository blob mounting within a registry, when enabled",
            "https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html",
        ),
    ),
)

_ACR_HOST = "myregistry.azurecr.io"

ACR = RegistryProfile(
    key="acr",
    name="ACR",
    registry_host=_ACR_HOST,
    token_path="/oauth2/token",
    auth="bearer",
    service=_ACR_HOST,
    post="oauth2",
    token_field="access_token",
    expires_in=None,
    anonymous_namespace="public",
    blob_host="myregistryeus.blob.core.windows.net",
    blob_style="azure",
    credential=CredentialForm("identitytoken", _ACR_HOST, "00000000-0000-0000-0000-000000000000"),
    helper_credential=CredentialForm("helper", _ACR_HOST, "<token>", helper="acr-env"),
    namespaces=("team",),
    quirks=(
        Quirk(
            "token endpoint /oauth2/token on the registry, service = the login server; "
            "GET with Basic and POST with grant_type=refresh_token",
            "https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md",
        ),
        Quirk(
            'the token response has only "access_token", no expires_in',
            "https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md",
        ),
        Quirk(
            "az acr login writes the all-zero GUID user beside an identitytoken",
            "google/go-containerregistry PR #1256 ; "
            "https://learn.microsoft.com/azure/container-registry/container-registry-authentication",
        ),
        Quirk(
            "identity (refresh) tokens need the OAuth2 POST; GET-first clients fail",
            "moby/buildkit#2554 ; Azure/acr#582",
        ),
        Quirk(
            "docker-credential-acr-env answers user <token> and a refresh token",
            "chrismellard/docker-credential-acr-env pkg/credhelper/helper.go",
        ),
        Quirk(
            "anonymous pull, when enabled on the registry",
            "https://learn.microsoft.com/azure/container-registry/anonymous-pull-access",
        ),
        Quirk(
            "blob GETs redirect to the registry's storage account (*.blob.core.windows.net, SAS)",
            "https://learn.microsoft.com/azure/container-registry/container-registry-firewall-access-rules",
        ),
    ),
)

QUAY = RegistryProfile(
    key="quay",
    name="Quay",
    registry_host="quay.io",
    token_path="/v2/auth",
    auth="bearer",
    service="quay.io",
    post=405,
    token_field="token",
    expires_in=None,
    challenge_scope=False,
    anonymous_namespace="acme-public",
    blob_host="cdn01.quay.io",
    blob_style="cloudfront",
    credential=CredentialForm("namespaces", "quay.io", "+ci"),
    namespaces=("acme", "beta"),
    quirks=(
        Quirk(
            "token endpoint quay.io/v2/auth (GET only), service quay.io",
            "quay/quay endpoints/v2/v2auth.py",
        ),
        Quirk('the token response has only "token"', "quay/quay endpoints/v2/v2auth.py"),
        Quirk(
            "the Bearer challenge has no scope parameter",
            "OctopusDeploy/Issues#5076",
        ),
        Quirk(
            "robot accounts (org+name) per organisation, kept under per-namespace keys "
            "(quay.io/org) in auths",
            "containers/image#981 ; https://docs.quay.io/glossary/robot-accounts.html",
        ),
        Quirk(
            "blob GETs redirect to the CloudFront CDN (cdn01.quay.io) with a signed URL",
            "https://access.redhat.com/articles/quay-io-hosts (firewall allow list); "
            "assumed: the CloudFront query shape",
        ),
    ),
)

HARBOR = RegistryProfile(
    key="harbor",
    name="Harbor",
    registry_host="harbor.example.com",
    token_path="/service/token",
    auth="bearer",
    service="harbor-registry",
    post=405,
    token_field="token",
    expires_in=1800,
    anonymous_namespace="library",
    basic_realm="harbor",
    harbor_mixed=True,
    credential=CredentialForm("auths", "harbor.example.com", "robot$acme+ci"),
    namespaces=("acme",),
    note="Harbor has no public instance: harbor.example.com stands for a self-hosted one.",
    quirks=(
        Quirk(
            'token endpoint /service/token, service "harbor-registry"',
            "goharbor/harbor src/core/service/token (make/photon/prepare registry config)",
        ),
        Quirk(
            "token response: token, expires_in (30 minutes by default), issued_at",
            "goharbor/harbor src/pkg/token (token_expiration default 30)",
        ),
        Quirk(
            "robot accounts are named robot$<project>+<name>",
            "https://goharbor.io/docs/2.10.0/working-with-projects/project-configuration/"
            "create-robot-accounts/",
        ),
        Quirk(
            "the registry API also takes Basic credentials, and a request whose credentials "
            "it refused gets a Basic challenge",
            "google/go-containerregistry#1744",
        ),
        Quirk(
            "public projects (library) pull anonymously",
            "https://goharbor.io/docs/2.10.0/working-with-projects/create-projects/",
        ),
        Quirk(
            "blobs are served by Harbor itself (storage redirects are off by default)",
            "goharbor/harbor make/photon/prepare/templates/registry/config.yml.jinja "
            "(redirect disable)",
        ),
    ),
)

GITLAB = RegistryProfile(
    key="gitlab",
    name="GitLab",
    registry_host="registry.gitlab.com",
    token_host="gitlab.com",
    token_path="/jwt/auth",
    auth="bearer",
    service="container_registry",
    post=404,
    token_field="token",
    expires_in=None,
    scope_reading="last",
    anonymous_namespace="gitlab-org",
    blob_host="storage.googleapis.com",
    blob_path="/gitlab-gprd-registry",
    blob_style="gcs",
    credential=CredentialForm("auths", "registry.gitlab.com", "acme-deploy"),
    namespaces=("acme",),
    quirks=(
        Quirk(
            "registry on registry.gitlab.com, tokens from gitlab.com/jwt/auth (another host of "
            'the same site), service "container_registry"',
            "https://docs.gitlab.com/ee/user/packages/container_registry/ ; devcontainers/cli#1278",
        ),
        Quirk(
            "/jwt/auth is a GET route: POST answers 404",
            "gitlab-org/gitlab config/routes.rb (get 'jwt/auth')",
        ),
        Quirk(
            'the token response has only "token", no expires_in',
            "gitlab-org/gitlab app/controllers/jwt_controller.rb",
        ),
        Quirk(
            "reads one of several scope parameters (the last, as Rails keeps it)",
            "estesp/manifest-tool#53",
        ),
        Quirk(
            "public projects pull anonymously",
            "https://docs.gitlab.com/ee/user/packages/container_registry/",
        ),
        Quirk(
            "blob GETs redirect to object storage (GCS on gitlab.com) with a signed URL",
            "https://docs.gitlab.com/ee/administration/packages/container_registry.html"
            "#disable-redirect-for-storage-driver",
        ),
    ),
)

#: Every registry the zoo emulates, in the order the report lists them.
PROFILES: tuple[RegistryProfile, ...] = (
    DOCKER_HUB,
    GHCR,
    GCR,
    ARTIFACT_REGISTRY,
    ECR,
    ACR,
    QUAY,
    HARBOR,
    GITLAB,
)
