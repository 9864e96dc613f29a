"""How this tier points the azure-ai-agents SDK at Spindle (the README's recipe): the keys and
projects of the session server, a TokenCredential whose token is the key, and the per-call
policy that lets the bearer token go over plain http."""

from __future__ import annotations

import time
from typing import Any

try:
    from azure.ai.agents import AgentsClient
except ImportError as exc:  # run under the main venv by mistake
    raise ImportError("tests/e2e_agents needs the azure-ai-agents SDK: run it under .venv-agents "
                      "(scripts/make_sdk_venvs.sh, scripts/run_e2e.sh)") from exc
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import AzureKeyCredentialPolicy, SansIOHTTPPolicy

KEY = "sk-agents-alpha"
PROJECT = "alpha-project"
OTHER_KEY = "sk-agents-beta"
OTHER_PROJECT = "beta-project"


class StaticKeyCredential:
    """A ``TokenCredential`` handing out a Spindle key as the bearer token, as the README shows."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.key, int(time.time()) + 3600)


class AllowPlainHttp(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Per-call policy: lets the bearer-token policy send the token over plain http."""

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        request.context.options["enforce_https"] = False


def new_client(server_url: str, form: str, *, key: str = KEY, auth: str = "bearer",
               project: str = PROJECT) -> AgentsClient:
    endpoint = f"{server_url}/api/projects/{project}" if form == "projects" else f"{server_url}/openai"
    # Retries off: a server error must fail the test at once, not after the SDK's backoff.
    options: dict[str, Any] = {"retry_total": 0}
    if auth == "bearer":
        return AgentsClient(endpoint=endpoint, credential=StaticKeyCredential(key),
                            per_call_policies=[AllowPlainHttp()], **options)
    if auth == "api-key":
        return AgentsClient(endpoint=endpoint, credential=StaticKeyCredential(key),
                            authentication_policy=AzureKeyCredentialPolicy(AzureKeyCredential(key), "api-key"),
                            **options)
    raise ValueError(f"unknown auth {auth!r}")
