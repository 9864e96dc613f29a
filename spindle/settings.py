"""Typed settings, read from ``SPINDLE_*`` environment variables.

Each subsystem owns its settings class (with its own env prefix) and the main ``Settings``
composes them, so a subsystem can add a setting without touching this file. Every field has
a default and a description; ``tests/unit/test_settings_documented.py`` fails when one is
missing from the README.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spindle.retrieval.settings import RetrievalSettings
from spindle.sandbox.settings import SandboxSettings


class ServerSettings(BaseSettings):
    """The HTTP server, storage, keys and the upstream model."""

    model_config = SettingsConfigDict(env_prefix="SPINDLE_", extra="ignore")

    data_dir: Path = Field(Path("./spindle-data"), description="Where the SQLite database and file bytes live.")
    blob_url: str = Field(
        "", description="File bytes: empty = the data dir; `s3://bucket/prefix` = S3 or an S3-compatible store "
                        "(credentials, region and endpoint from the standard `AWS_*` variables).")
    database_url: str = Field(
        "", description="Metadata store: empty = the embedded SQLite in the data dir; "
                        "`postgresql://user:pass@host:5432/db` = PostgreSQL.")
    host: str = Field("127.0.0.1", description="Address to bind. Non-loopback needs SPINDLE_API_KEYS.")
    port: int = Field(8000, description="Port to listen on.")
    api_keys: str = Field(
        "",
        description="Comma-separated `key` or `key:project`. Empty = local mode (loopback only, any key accepted).",
    )
    llm_base_url: str = Field(
        "", description="Base URL of an OpenAI-compatible chat-completions API, e.g. `http://localhost:11434/v1`."
    )
    llm_api_key: str = Field("", description="API key sent to the upstream model (Bearer).")
    llm_model_map: str = Field(
        "",
        description="Optional `assistant-model=upstream-model` pairs, comma-separated; unmapped names pass through.",
    )
    llm_timeout_s: float = Field(600.0, description="Upstream request timeout in seconds.")
    llm_azure_api_version: str = Field(
        "",
        description="Set when the upstream is Azure OpenAI: calls go to `/openai/deployments/{model}/chat/completions?api-version=...` with an `api-key` header.",
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest file upload accepted (bytes).")
    max_json_body_bytes: int = Field(
        32 * 1024 * 1024,
        description="Largest JSON request body accepted (bytes), counted while it is read; larger ones get 413 "
        "(32 messages at OpenAI's 256,000-character limit fit). Uploads have their own limit "
        "(SPINDLE_MAX_UPLOAD_BYTES).",
    )
    http_header_timeout_s: float = Field(
        10.0,
        description="Seconds a connection has to send a request's headers (from connecting, or from the previous "
        "response on a kept-alive connection) before it is closed.",
    )
    http_body_timeout_s: float = Field(
        60.0, description="Longest pause (seconds) between two pieces of a request body before the connection is closed."
    )
    http_max_connections: int = Field(
        0,
        description="Open connections at most; at the limit a new one replaces the oldest connection still sending "
        "its headers, or is refused. 0 = half the open-file limit (raised to its hard limit at start), at most 8192.",
    )
    max_concurrent_runs: int = Field(256, description="Runs executing at once in this process; more wait queued.")
    max_tool_iterations: int = Field(
        16, description="Model turns one run may take (tool call, result, call again...) before it ends incomplete."
    )
    requires_action_expiry_s: int = Field(600, description="How long a run may wait for tool outputs before it expires.")
    drain_timeout_s: float = Field(
        60.0, ge=0, description="On SIGTERM, how long runs executing here may take to finish before they are "
                                "stopped (rolling restarts: nothing new is claimed meanwhile).")
    run_lease_s: float = Field(
        15.0, gt=0.5, description="A process executing a run renews its claim this often (÷3); a run whose claim "
                                  "ran out this long ago is taken over by another process (its process died).")
    poll_after_ms: int = Field(
        100, description="Value of the `openai-poll-after-ms` header that the SDK's *_and_poll helpers obey."
    )
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (CLI flags, tests)."""
    return Settings(server=ServerSettings(**overrides))  # type: ignore[arg-type]


class Settings(BaseSettings):
    """All settings. Subsystem settings are read from their own env prefixes."""

    model_config = SettingsConfigDict(extra="ignore")

    server: ServerSettings = Field(default_factory=ServerSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir


def env_name(section: type[BaseSettings], field_name: str) -> str:
    """The environment variable a settings field is read from (its alias, if it has one)."""
    field = section.model_fields[field_name]
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{section.model_config.get('env_prefix', '')}{field_name}".upper()


def all_setting_env_names() -> list[str]:
    """Every environment variable Spindle reads (for docs and the README check)."""
    return [env_name(section, name) for section in _sections() for name in section.model_fields]


def _sections() -> list[type[BaseSettings]]:
    return [ServerSettings, SandboxSettings, RetrievalSettings]
