"""The I/O-free auth core: every decision of the flow, driven by the adapters.

:mod:`aociauth.core.origin` is the per-origin state machine,
:mod:`aociauth.core.rules` the rules as plain functions, and
:mod:`aociauth.core.flow` the request and token-fetch flows that the aiohttp
middleware and the httpx ``Auth`` drive. Nothing here performs I/O, reads a
clock, or imports aiohttp, httpx, asyncio or anyio.
"""

from aociauth.core.flow import (
    AuthCore,
    AwaitProbe,
    Deny,
    Fail,
    FetchJob,
    FetchKey,
    FetchToken,
    FlowPolicy,
    Hit,
    Identity,
    LookupAnswer,
    LookupCredentials,
    Outcome,
    Pass,
    Prepared,
    PrepareResend,
    RefreshInBackground,
    Reply,
    Requester,
    RequestFacts,
    Resend,
    Send,
    TokenCall,
    TokenReply,
)
from aociauth.core.origin import OriginState, Phase

__all__ = [
    "AuthCore",
    "AwaitProbe",
    "Deny",
    "Fail",
    "FetchJob",
    "FetchKey",
    "FetchToken",
    "FlowPolicy",
    "Hit",
    "Identity",
    "LookupAnswer",
    "LookupCredentials",
    "OriginState",
    "Outcome",
    "Pass",
    "Phase",
    "PrepareResend",
    "Prepared",
    "RefreshInBackground",
    "Reply",
    "RequestFacts",
    "Requester",
    "Resend",
    "Send",
    "TokenCall",
    "TokenReply",
]
