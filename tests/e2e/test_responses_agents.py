"""The OpenAI Agents SDK (PyPI ``openai-agents``, in its own venv ``.venv-oagents``; see
scripts/make_sdk_venvs.sh) against the real server through the Responses API: an Agent with a
function tool, CodeInterpreterTool and FileSearchTool, streamed and not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import harness
import pytest

agents = pytest.importorskip("agents")  # only in .venv-oagents

from agents import (  # noqa: E402
    Agent,
    CodeInterpreterTool,
    FileSearchTool,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, OpenAI  # noqa: E402

set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """The current weather of a city."""
    return f"drizzle and 11 degrees in {city}"


def _model(server: harness.SpindleServer) -> tuple[OpenAIResponsesModel, AsyncOpenAI]:
    client = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="sk-test", max_retries=0)
    return OpenAIResponsesModel(model="gpt-4o", openai_client=client), client


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": json.dumps(arguments)}], "chunk_chars": 9}


def test_agent_with_a_function_tool(spindle_server: harness.SpindleServer, upstream: harness.Upstream) -> None:
    upstream.script("weather in Lisbon", [_call("get_weather", city="Lisbon"),
                                          {"content": "Lisbon: drizzle, 11 degrees."}])

    async def main() -> Any:
        model, client = _model(spindle_server)
        agent = Agent(name="weather", instructions="Use the tool.", model=model, tools=[get_weather])
        try:
            return await Runner.run(agent, "What is the weather in Lisbon?", run_config=RunConfig(tracing_disabled=True))
        finally:
            await client.close()

    result = asyncio.run(main())
    assert result.final_output == "Lisbon: drizzle, 11 degrees."
    sent = upstream.requests()[-1]
    tool_messages = [m for m in sent["messages"] if m["role"] == "tool"]
    assert tool_messages and "drizzle and 11 degrees in Lisbon" in tool_messages[-1]["content"]


def test_agent_with_code_interpreter_streamed(spindle_server: harness.SpindleServer,
                                             upstream: harness.Upstream) -> None:
    upstream.script("compute 6 times 7", [_call("python", code="print(6 * 7)"), {"content": "It is 42."}])

    async def main() -> tuple[Any, list[str]]:
        model, client = _model(spindle_server)
        agent = Agent(name="coder", instructions="Run code.", model=model, tools=[
            CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}})])
        kinds: list[str] = []
        try:
            result = Runner.run_streamed(agent, "compute 6 times 7", run_config=RunConfig(tracing_disabled=True))
            async for event in result.stream_events():
                if event.type == "raw_response_event":
                    kinds.append(event.data.type)
            return result, kinds
        finally:
            await client.close()

    result, kinds = asyncio.run(main())
    assert result.final_output == "It is 42."
    assert "response.code_interpreter_call_code.delta" in kinds and kinds[-1] == "response.completed"
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    assert calls and calls[0].raw_item.type == "code_interpreter_call" and calls[0].raw_item.code == "print(6 * 7)"


def test_agent_with_file_search(spindle_server: harness.SpindleServer, upstream: harness.Upstream,
                                tmp_path: Any) -> None:
    sync = OpenAI(base_url=f"{spindle_server.base_url}/v1", api_key="sk-test", max_retries=0)
    store = sync.vector_stores.create(name="agents")
    (tmp_path / "policy.txt").write_text("Refunds are accepted within 30 days of purchase.\n")
    with open(tmp_path / "policy.txt", "rb") as handle:
        sync.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=handle)
    sync.close()
    upstream.script("refund window", [_call("file_search", queries=["refund days"]),
                                      {"content": "Within 30 days {{marker:0}}."}])

    async def main() -> Any:
        model, client = _model(spindle_server)
        agent = Agent(name="support", instructions="Search first.", model=model, tools=[
            FileSearchTool(vector_store_ids=[store.id], max_num_results=3, include_search_results=True)])
        try:
            return await Runner.run(agent, "What is the refund window?", run_config=RunConfig(tracing_disabled=True))
        finally:
            await client.close()

    result = asyncio.run(main())
    assert result.final_output == "Within 30 days ."
    [search] = [i.raw_item for i in result.new_items if i.type == "tool_call_item"]
    assert search.type == "file_search_call" and search.results and "30 days" in search.results[0].text
