"""The upstream model: any OpenAI-compatible ``/chat/completions`` endpoint.

``ChatModel`` is the small interface the run engine and tools use; ``OpenAICompatibleModel``
speaks the protocol over httpx (vLLM, Ollama, llama.cpp, LM Studio, OpenAI, Azure), always
streaming so tokens reach clients as they come. ``UnconfiguredModel`` stands in when no
backend is set: the server runs, and a run fails with a message saying what to set.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """The model backend failed; ``code`` is an OpenAI ``last_error.code``."""

    def __init__(self, message: str, code: str = "server_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    response_format: Any = None


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Finish:
    reason: str | None
    usage: dict[str, int] = field(default_factory=dict)


ChatDelta = TextDelta | ToolCallDelta | Finish


class ChatModel(abc.ABC):
    configured: bool = True

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Stream one completion; ends with exactly one ``Finish``. Raises ``UpstreamError``."""

    async def complete(self, model: str, messages: list[dict[str, Any]], **options: Any) -> str:
        """A whole (non-tool) completion as text, for helpers such as query rewriting."""
        parts: list[str] = []
        async for delta in self.stream(ChatRequest(model=model, messages=messages, **options)):
            if isinstance(delta, TextDelta):
                parts.append(delta.text)
        return "".join(parts)

    async def aclose(self) -> None:
        return None

    def describe(self) -> str:
        return type(self).__name__


class UnconfiguredModel(ChatModel):
    configured = False

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        raise UpstreamError(
            "No model backend is configured. Set SPINDLE_LLM_BASE_URL to an OpenAI-compatible API "
            "(e.g. http://localhost:11434/v1 for Ollama) and SPINDLE_LLM_API_KEY if it needs one, then restart Spindle."
        )

    def describe(self) -> str:
        return "none (set SPINDLE_LLM_BASE_URL to enable model turns)"


class OpenAICompatibleModel(ChatModel):
    def __init__(self, base_url: str, api_key: str = "", *, model_map: dict[str, str] | None = None,
                 timeout_s: float = 600.0, azure_api_version: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model_map = model_map or {}
        self.azure_api_version = azure_api_version
        headers = {"api-key": api_key} if azure_api_version and api_key else (
            {"authorization": f"Bearer {api_key}"} if api_key else {})
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )
        self._include_usage = True  # switched off for backends that reject stream_options

    def describe(self) -> str:
        return f"{self.base_url} (OpenAI-compatible{', Azure' if self.azure_api_version else ''})"

    def _url(self, model: str) -> tuple[str, dict[str, str]]:
        if self.azure_api_version:
            return (f"{self.base_url}/openai/deployments/{model}/chat/completions",
                    {"api-version": self.azure_api_version})
        return f"{self.base_url}/chat/completions", {}

    def _body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": request.messages, "stream": True}
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        for key in ("temperature", "top_p", "max_tokens", "response_format"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:  # type: ignore[override]
        model = self.model_map.get(request.model, request.model)
        url, params = self._url(model)
        body = self._body(request, model)
        try:
            async with self._client.stream("POST", url, params=params, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    if response.status_code == 400 and "stream_options" in detail and self._include_usage:
                        self._include_usage = False
                        async for delta in self.stream(request):
                            yield delta
                        return
                    code = "rate_limit_exceeded" if response.status_code == 429 else "server_error"
                    raise UpstreamError(f"The model backend answered {response.status_code}: {detail}", code)
                async for delta in _parse_stream(response):
                    yield delta
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Could not reach the model backend at {self.base_url}: {exc!r}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


async def _parse_stream(response: httpx.Response) -> AsyncIterator[ChatDelta]:
    """Chat-completion chunks → deltas. The stream is the model's output, so untrusted: a
    chunk of the wrong shape is an ``UpstreamError`` (the run fails with a clear message, not
    a server error), and text is made valid Unicode before it is stored or sent anywhere."""
    finish_reason: str | None = None
    usage: dict[str, int] = {}
    text = _Mender()
    arguments: dict[int, _Mender] = {}
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            chunk = json.loads(payload)
        except (json.JSONDecodeError, RecursionError, ValueError):
            raise UpstreamError(f"The model backend sent a malformed stream chunk: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"The model backend sent a stream chunk that is not an object: {payload[:200]!r}")
        if "error" in chunk:
            raise UpstreamError(f"The model backend reported an error: {json.dumps(chunk['error'])[:500]}")
        if isinstance(chunk.get("usage"), dict):
            usage = {k: int(v) for k, v in chunk["usage"].items() if isinstance(v, int) and 0 <= v < 1 << 53}
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            if content and isinstance(content, str):
                mended = text.feed(content)
                if mended:
                    yield TextDelta(mended)
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    raise UpstreamError("The model backend sent a malformed tool call.")
                index, function = call.get("index", 0), call.get("function") or {}
                name, raw_args, call_id = function.get("name"), function.get("arguments") or "", call.get("id")
                if not (isinstance(index, int) and 0 <= index < 1024 and isinstance(function, dict)
                        and isinstance(name, str | None) and isinstance(raw_args, str)
                        and isinstance(call_id, str | None)):
                    raise UpstreamError("The model backend sent a malformed tool call.")
                yield ToolCallDelta(index=index, id=call_id, name=_mend_whole(name) if name else name,
                                    arguments=arguments.setdefault(index, _Mender()).feed(raw_args))
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                finish_reason = choice["finish_reason"]
    tail = text.flush()
    if tail:
        yield TextDelta(tail)
    for index, mender in arguments.items():
        rest = mender.flush()
        if rest:
            yield ToolCallDelta(index=index, arguments=rest)
    yield Finish(finish_reason, usage)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _mend_whole(value: str) -> str:
    """Valid Unicode: surrogate pairs joined, lone surrogates replaced by U+FFFD."""
    if not _LONE_SURROGATE.search(value):
        return value
    joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _LONE_SURROGATE.sub("\ufffd", joined)


class _Mender:
    """``_mend_whole`` for a text that arrives in pieces: a high surrogate at the end of a
    piece waits for the low one that may start the next (a pair split across chunks)."""

    def __init__(self) -> None:
        self._carry = ""

    def feed(self, piece: str) -> str:
        piece = self._carry + piece
        self._carry = ""
        if piece and "\ud800" <= piece[-1] <= "\udbff":
            piece, self._carry = piece[:-1], piece[-1]
        return _mend_whole(piece)

    def flush(self) -> str:
        rest, self._carry = self._carry, ""
        return _mend_whole(rest)


def build_model(base_url: str, api_key: str, model_map_spec: str, timeout_s: float,
                azure_api_version: str) -> ChatModel:
    if not base_url:
        return UnconfiguredModel()
    mapping = {}
    for pair in (p.strip() for p in model_map_spec.split(",")):
        if "=" in pair:
            left, right = pair.split("=", 1)
            mapping[left.strip()] = right.strip()
    return OpenAICompatibleModel(base_url, api_key, model_map=mapping, timeout_s=timeout_s,
                                 azure_api_version=azure_api_version)
