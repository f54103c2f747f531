"""The registry zoo: nine public registries emulated on loopback under their real names.

Docker Hub, GHCR, GCR, Artifact Registry, ECR, ACR, Quay, Harbor and GitLab,
each a declarative :class:`RegistryProfile` of quirks with their sources
(:mod:`aociauth.testing.zoo.profiles`), run as https servers on 127.0.0.1
(:class:`Zoo`) that a client reaches by their real host names through
:class:`ZooResolver`, which knows no other name, and trusting a throwaway CA:
nothing leaves the machine. Fake credential helpers
(``docker-credential-ecr-login``, ``-gcloud``, ``-acr-env``) print what the
real ones print.

:data:`FLOWS` are what users do (public and private pulls with the CDN hop,
revoked tokens, a burst, a mount, a wrong password, expiring helper
credentials, a ``with_scope`` batch, Docker Hub's rate limit); :func:`run_flow` runs one
and :func:`audit` checks every request it made: credentials and tokens
reach only their own registry's hosts, never a CDN. ``python -m
aociauth.testing.zoo`` runs them all and prints, per registry, the flows
passed, 401s, token requests and failures::

    async with Zoo(workdir=tmp_path) as zoo:
        outcome = await run_flow(zoo, "ghcr", FLOWS[0])
        assert outcome.passed and not outcome.leaks
"""

from aociauth.testing.zoo.flows import (
    FLOWS,
    Flow,
    FlowFailed,
    FlowOutcome,
    RegistryReport,
    Watch,
    audit,
    format_table,
    pull,
    run_flow,
    run_zoo,
    summarize,
)
from aociauth.testing.zoo.profiles import (
    ACR,
    ARTIFACT_REGISTRY,
    DOCKER_HUB,
    ECR,
    GCR,
    GHCR,
    GITLAB,
    HARBOR,
    PROFILES,
    QUAY,
    CredentialForm,
    Quirk,
    RegistryProfile,
)
from aociauth.testing.zoo.servers import Zoo, ZooHostError, ZooRegistry, ZooResolver

__all__ = [
    "ACR",
    "ARTIFACT_REGISTRY",
    "DOCKER_HUB",
    "ECR",
    "FLOWS",
    "GCR",
    "GHCR",
    "GITLAB",
    "HARBOR",
    "PROFILES",
    "QUAY",
    "CredentialForm",
    "Flow",
    "FlowFailed",
    "FlowOutcome",
    "Quirk",
    "RegistryProfile",
    "RegistryReport",
    "Watch",
    "Zoo",
    "ZooHostError",
    "ZooRegistry",
    "ZooResolver",
    "audit",
    "format_table",
    "pull",
    "run_flow",
    "run_zoo",
    "summarize",
]
