"""Request schemas for the Containers API (OpenAI's limits; a bad value is a 400 naming it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spindle.schemas.common import Loose


class ExpiresAfter(Loose):
    anchor: Literal["last_active_at"]
    minutes: int = Field(ge=1, le=24 * 60)


class NetworkPolicy(Loose):
    """``disabled``, or ``allowlist`` with domains (refused by the service: no network here)."""

    type: Literal["disabled", "allowlist"]
    allowed_domains: list[str] | None = Field(default=None, max_length=1000)


class ContainerCreate(Loose):
    name: str = Field(min_length=1, max_length=256)
    file_ids: list[str] | None = Field(default=None, max_length=1000)
    expires_after: ExpiresAfter | None = None
    memory_limit: Literal["1g", "4g", "16g", "64g"] | None = None
    network_policy: NetworkPolicy | None = None


class ContainerFileCreate(Loose):
    file_id: str = Field(min_length=1)
