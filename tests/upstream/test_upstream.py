"""Tests of the scripted upstream itself, driven by the official ``openai`` client.

If the stand-in model drifts from what OpenAI sends, every test built on it lies; these tests
hold it to the protocol as the SDK parses it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from . import UpstreamHandle, start_in_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
# The SDK types its parameters as TypedDicts; these tests send plain dicts on purpose (they
# are what goes over the wire), so the client is typed loosely rather than cast everywhere.
Client = Any
USER: Any = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamHandle]:
    _, handle = start_in_thread()
    with handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean(upstream: UpstreamHandle) -> None:
    upstream.reset()


@pytest.fixture(scope="module")
def client(upstream: UpstreamHandle) -> Iterator[Client]:
    # No retries: a scripted 500 must surface at once, not after the SDK's backoff.
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def script(upstream: UpstreamHandle, match: str, replies: list[dict[str, Any]]) -> None:
    """Script over HTTP, as the e2e tier does, so the control endpoint is covered too."""
    response = httpx.post(f"{upstream.root_url}/_script", json={"match": match, "replies": replies})
    assert response.status_code == 200, response.text


def stream_text(client: Client, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def gather_tool_calls(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Assemble streamed tool calls by index, the way every SDK consumer has to."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                assert not call["id"], "a tool call id is sent once, in the opening delta"
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    return calls


def test_echo_non_streaming(client: Client) -> None:
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.model == "m"


def test_echo_streams_in_small_chunks(client: Client) -> None:
    text, chunks = stream_text(client, USER)
    assert text == "You said: hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_include_usage_adds_a_final_usage_chunk(client: Client) -> None:
    _, chunks = stream_text(client, USER, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )


def test_scripted_usage_overrides(client: Client, upstream: UpstreamHandle) -> None:
    script(upstream, "hello", [{"content": "ok", "usage": {"prompt_tokens": 11, "completion_tokens": 7}}])
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (11, 7, 18)


def test_replies_are_consumed_in_order_then_the_last_repeats(
    client: Client, upstream: UpstreamHandle
) -> None:
    script(upstream, "hello", [{"content": "one"}, {"content": "two: {{last_user}}"}])
    answers = [
        client.chat.completions.create(model="m", messages=USER).choices[0].message.content for _ in range(3)
    ]
    assert answers == ["one", "two: hello there", "two: hello there"]


def test_newest_rule_wins_and_unmatched_requests_echo(client: Client, upstream: UpstreamHandle) -> None:
    script(upstream, "hello", [{"content": "older"}])
    script(upstream, "hello", [{"content": "newer"}])
    assert stream_text(client, USER)[0] == "newer"
    assert stream_text(client, [{"role": "user", "content": "bye"}])[0] == "You said: bye"


def test_match_looks_at_system_and_content_parts_but_not_assistant(
    client: Client, upstream: UpstreamHandle
) -> None:
    script(upstream, "SECRET", [{"content": "matched"}])
    system = [{"role": "system", "content": "the SECRET rule"}, {"role": "user", "content": "x"}]
    assert stream_text(client, system)[0] == "matched"
    parts = [{"role": "user", "content": [{"type": "text", "text": "a SECRET in parts"}]}]
    assert stream_text(client, parts)[0] == "matched"
    assistant = [{"role": "assistant", "content": "SECRET"}, {"role": "user", "content": "x"}]
    assert stream_text(client, assistant)[0] == "You said: x"


def test_parallel_tool_calls_stream_as_index_keyed_fragments(
    client: Client, upstream: UpstreamHandle
) -> None:
    args_a = json.dumps({"location": "Berlin", "unit": "celsius"})
    args_b = json.dumps({"timezone": "Europe/Berlin"})
    script(
        upstream,
        "weather",
        [
            {
                "tool_calls": [
                    {"name": "get_weather", "arguments": args_a},
                    {"name": "get_time", "arguments": args_b},
                ]
            }
        ],
    )
    messages = [{"role": "user", "content": "weather and time?"}]
    tools = [_tool("get_weather"), _tool("get_time")]
    chunks = list(client.chat.completions.create(model="m", messages=messages, tools=tools, stream=True))

    calls = gather_tool_calls(chunks)
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert (calls[0]["arguments"], calls[1]["arguments"]) == (args_a, args_b)
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    fragments = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(fragments) > 6, "arguments must arrive split over several chunks"
    first = fragments[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_sdk_stream_helper_assembles_tool_calls(client: Client, upstream: UpstreamHandle) -> None:
    script(
        upstream,
        "weather",
        [
            {
                "content": "Let me check.",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            }
        ],
    )
    messages = [{"role": "user", "content": "weather?"}]
    with client.chat.completions.stream(model="m", messages=messages, tools=[_tool("get_weather")]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == '{"city": "Oslo"}'


def test_tool_calls_non_streaming_and_tool_templates(client: Client, upstream: UpstreamHandle) -> None:
    script(
        upstream,
        "search",
        [
            {"tool_calls": [{"name": "lookup", "arguments": "{}", "id": "call_fixed"}]},
            {"content": "Found: {{last_tool}} cites {{marker:1}} and {{marker:0}} but not {{marker:5}}"},
        ],
    )
    first = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "search docs"}], tools=[_tool("lookup")]
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, first.choices[0].message.content) == ("call_fixed", "lookup", None)

    follow_up: list[dict[str, Any]] = [
        {"role": "user", "content": "search docs"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": "call_fixed", "content": "alpha 【4:0†a.txt】 beta 【4:1†b.txt】"},
    ]
    text, _ = stream_text(client, follow_up, tools=[_tool("lookup")])
    assert (
        text
        == "Found: alpha 【4:0†a.txt】 beta 【4:1†b.txt】 cites 【4:1†b.txt】 and 【4:0†a.txt】 but not [no marker 5]"
    )


def test_max_tokens_cuts_the_answer_with_length(client: Client, upstream: UpstreamHandle) -> None:
    script(upstream, "long", [{"content": "x" * 100}])
    messages = [{"role": "user", "content": "long answer"}]
    completion = client.chat.completions.create(model="m", messages=messages, max_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "x" * 20
    text, chunks = stream_text(client, messages, max_completion_tokens=2)
    assert (text, chunks[-1].choices[0].finish_reason) == ("x" * 8, "length")


def test_scripted_finish_reason_is_kept(client: Client, upstream: UpstreamHandle) -> None:
    script(upstream, "hello", [{"content": "cut", "finish_reason": "length"}])
    assert client.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(500, openai.InternalServerError), (429, openai.RateLimitError), (400, openai.BadRequestError)],
)
def test_scripted_errors_use_the_openai_envelope(
    client: Client, upstream: UpstreamHandle, status: int, error_class: type[openai.APIStatusError]
) -> None:
    script(upstream, "hello", [{"error": {"status": status, "message": "boom"}}])
    for stream in (False, True):
        with pytest.raises(error_class) as caught:
            client.chat.completions.create(model="m", messages=USER, stream=stream)
        assert caught.value.status_code == status
        assert caught.value.message.endswith("boom")


def test_mid_stream_error_raises_after_some_text(client: Client, upstream: UpstreamHandle) -> None:
    script(
        upstream,
        "hello",
        [{"content": "partial answer", "error": {"message": "upstream died", "mid_stream": True}}],
    )
    received = []
    with pytest.raises(openai.APIError, match="upstream died"):
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial answer"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, "tool_choice"),
        ({"model": "m", "messages": USER, "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "messages": USER, "temperature": 3}, "temperature"),
        (
            {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
        ),
    ],
)
def test_invalid_bodies_get_400(upstream: UpstreamHandle, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{upstream.base_url}/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_tool_messages_must_answer_a_preceding_tool_call(client: Client) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    wrong_id = [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_2", "content": "x"},
    ]
    unanswered = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "user", "content": "?"},
    ]
    for messages in (orphan, wrong_id, unanswered):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=messages, tools=[_tool("f")])  # type: ignore[arg-type]
    answered = [*unanswered[:2], {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    assert client.chat.completions.create(model="m", messages=answered, tools=[_tool("f")]).choices  # type: ignore[arg-type]


def test_request_log_and_reset(client: Client, upstream: UpstreamHandle) -> None:
    client.chat.completions.create(
        model="m", messages=USER, max_tokens=50, tools=[_tool("f")], tool_choice="required"
    )
    logged = httpx.get(f"{upstream.root_url}/_requests").json()
    assert logged == [
        {"model": "m", "messages": USER, "max_tokens": 50, "tools": [_tool("f")], "tool_choice": "required"}
    ]
    full = httpx.get(f"{upstream.base_url}/_requests", params={"full": "1"}).json()
    assert (
        full[0]["path"] == "/v1/chat/completions" and full[0]["headers"]["authorization"] == "Bearer sk-test"
    )
    assert httpx.post(f"{upstream.root_url}/_reset").status_code == 200
    assert upstream.requests() == []


def test_bad_scripts_are_refused(upstream: UpstreamHandle) -> None:
    bad: dict[str, Any]
    for bad in (
        {"match": "x", "replies": []},
        {"match": "x", "replies": [{"contnet": "typo"}]},
        {"replies": [{}]},
    ):
        response = httpx.post(f"{upstream.root_url}/_script", json=bad)
        assert response.status_code == 400, bad
        assert "bad script" in response.json()["error"]["message"]


def test_azure_deployment_path(upstream: UpstreamHandle) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=upstream.root_url, api_key="k", api_version="2024-05-01-preview", max_retries=0
    ) as azure:
        completion = azure.chat.completions.create(model="my-deployment", messages=USER)
    assert completion.choices[0].message.content == "You said: hello there"
    entry = upstream.book.requests()[-1]
    assert (entry.path, entry.query, entry.headers["api-key"]) == (
        "/openai/deployments/my-deployment/chat/completions",
        "api-version=2024-05-01-preview",
        "k",
    )
    missing = httpx.post(
        f"{upstream.root_url}/openai/deployments/d/chat/completions", json={"messages": USER}
    )
    assert missing.status_code == 404


def test_delays_pace_the_stream(client: Client, upstream: UpstreamHandle) -> None:
    script(
        upstream,
        "hello",
        [{"content": "abcdefgh", "chunk_chars": 2, "first_token_delay_ms": 150, "delay_ms": 50}],
    )
    started = time.perf_counter()
    stamps = []
    for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter() - started)
    assert len(stamps) == 4
    assert stamps[0] >= 0.14
    assert stamps[-1] - stamps[0] >= 0.14  # three gaps of 50 ms


def test_hang_keeps_the_stream_open_until_the_client_leaves(upstream: UpstreamHandle) -> None:
    script(upstream, "hello", [{"content": "so far", "hang": True}])
    body = {"model": "m", "messages": USER, "stream": True}
    text = ""
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream(
            "POST", f"{upstream.base_url}/chat/completions", json=body, timeout=0.5
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    assert text == "so far"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{upstream.base_url}/chat/completions", json={**body, "stream": False}, timeout=0.3)
    # The server is still healthy after clients walked away from hanging requests.
    assert httpx.get(f"{upstream.root_url}/healthz").status_code == 200


def test_api_key_mode_rejects_wrong_keys() -> None:
    base_url, handle = start_in_thread(api_key="sk-right")
    with handle, openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="m", messages=USER)
        with openai.OpenAI(base_url=base_url, api_key="sk-right", max_retries=0) as right:
            assert right.chat.completions.create(model="m", messages=USER).choices


def test_many_concurrent_streams(upstream: UpstreamHandle) -> None:
    script(upstream, "slow", [{"content": "{{last_user}}", "delay_ms": 5, "chunk_chars": 3}])

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"slow request {i}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    assert asyncio.run(main()) == [f"slow request {i}" for i in range(64)]
    assert len(upstream.requests()) == 64


def test_cli_runs_as_a_module() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.split(" on ")[1].split()[0]
        root = base_url.removesuffix("/v1")
        assert (
            httpx.post(
                f"{root}/_script", json={"match": "ping", "replies": [{"content": "pong"}]}
            ).status_code
            == 200
        )
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            text, _ = stream_text(client, [{"role": "user", "content": "ping"}])
        assert text == "pong"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }
