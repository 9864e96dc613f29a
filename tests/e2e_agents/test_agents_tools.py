"""Runs with tools through the azure-ai-agents SDK, written as its samples are: code
interpreter (with an image saved by ``files.save``), the SDK's automatic function calls, file
search with citations and ``include``, streamed runs with ``submit_tool_outputs``, and
``create_thread_and_process_run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import (
    AgentEventHandler,
    AgentThreadCreationOptions,
    CodeInterpreterTool,
    FilePurpose,
    FileSearchTool,
    FunctionTool,
    ListSortOrder,
    MessageDeltaChunk,
    MessageRole,
    RequiredFunctionToolCall,
    RunAdditionalFieldList,
    RunStatus,
    RunStep,
    RunStepStatus,
    RunStepType,
    SubmitToolOutputsAction,
    ThreadMessage,
    ThreadMessageOptions,
    ThreadRun,
    ToolOutput,
    ToolSet,
    VectorStoreFileStatus,
)
from samples import pdf_with_text

# The SDK polls once a second by default; a tenth keeps the tier quick without changing what runs.
POLL = 0.1


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": json.dumps(arguments)}], "chunk_chars": 9}


def fetch_weather(location: str) -> str:
    """Fetches the weather for a location.

    :param location: The city to look up.
    :return: The weather as a JSON string.
    """
    return json.dumps({"location": location, "forecast": "drizzle, 11 degrees"})


def test_code_interpreter_image_saved(agents_client: AgentsClient, upstream: harness.Upstream,
                                      tmp_path: Path) -> None:
    code = ("import pandas as pd\nimport matplotlib.pyplot as plt\n"
            "df = pd.read_csv('/mnt/data/sectors.csv')\n"
            "t = df[df.sector == 'TRANSPORTATION']\n"
            "plt.bar(t.company, t.profit)\nplt.show()\n"
            "t.to_csv('/mnt/data/transport.csv', index=False)\n"
            "print(int(t.profit.sum()))\n")
    upstream.script("bar chart in TRANSPORTATION", [
        tool_call("python", code=code),
        {"content": "Total 42. [Download the data](sandbox:/mnt/data/transport.csv)"}])
    csv = tmp_path / "sectors.csv"
    csv.write_text("sector,company,profit\nTRANSPORTATION,a,12\nTRANSPORTATION,b,30\nENERGY,c,99\n")
    file = agents_client.files.upload_and_poll(file_path=str(csv), purpose=FilePurpose.AGENTS, polling_interval=POLL)
    code_interpreter = CodeInterpreterTool(file_ids=[file.id])
    agent = agents_client.create_agent(model="gpt-4o", name="my-agent", instructions="You are helpful agent",
                                       tools=code_interpreter.definitions, tool_resources=code_interpreter.resources)
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user",
                                  content="Could you please create bar chart in TRANSPORTATION sector for the "
                                          "operating profit from the uploaded csv file and provide file to me?")
    run = agents_client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.COMPLETED, run.last_error

    saved: list[Path] = []
    annotations: list[Any] = []
    for msg in agents_client.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING):
        for img in msg.image_contents:
            file_name = f"{img.image_file.file_id}_image_file.png"
            agents_client.files.save(file_id=img.image_file.file_id, file_name=file_name, target_dir=tmp_path)
            saved.append(tmp_path / file_name)
        annotations += msg.file_path_annotations
    (image,) = saved
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 1000
    (annotation,) = annotations
    assert annotation.text == "sandbox:/mnt/data/transport.csv"
    agents_client.files.save(file_id=annotation.file_path.file_id, file_name="transport.csv", target_dir=tmp_path)
    assert (tmp_path / "transport.csv").read_text().splitlines() == ["sector,company,profit",
                                                                      "TRANSPORTATION,a,12", "TRANSPORTATION,b,30"]
    steps = list(agents_client.run_steps.list(thread_id=thread.id, run_id=run.id, order=ListSortOrder.ASCENDING))
    ci = steps[0].step_details.tool_calls[0].code_interpreter
    outputs = {o.type: o for o in ci.outputs}
    assert ci.input == code and outputs["logs"].logs.strip() == "42"
    assert outputs["image"].image.file_id == image.name.split("_image_file")[0]


def test_function_tool_with_auto_function_calls(agents_client: AgentsClient, upstream: harness.Upstream) -> None:
    upstream.script("weather in Seattle", [tool_call("fetch_weather", location="Seattle"),
                                           {"content": "Here it is: {{last_tool}}"}])
    toolset = ToolSet()
    toolset.add(FunctionTool({fetch_weather}))
    agents_client.enable_auto_function_calls(toolset)
    agent = agents_client.create_agent(model="gpt-4o", name="weather", instructions="Use the tools.",
                                       toolset=toolset)
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user", content="What is the weather in Seattle?")
    run = agents_client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.COMPLETED, run.last_error
    last = agents_client.messages.get_last_message_text_by_role(thread_id=thread.id, role=MessageRole.AGENT)
    assert last is not None and last.text.value == "Here it is: " + fetch_weather("Seattle")
    sent = upstream.requests()
    assert sent[0]["tools"][0]["function"]["name"] == "fetch_weather"
    assert sent[0]["tools"][0]["function"]["parameters"]["required"] == ["location"]
    assert sent[-1]["messages"][-1] == {"role": "tool", "content": fetch_weather("Seattle"),
                                        "tool_call_id": sent[-1]["messages"][-2]["tool_calls"][0]["id"]}


def test_file_search_with_citations_include_and_batches(agents_client: AgentsClient,
                                                         upstream: harness.Upstream, tmp_path: Path) -> None:
    upstream.script("shares outstanding", [
        tool_call("file_search", queries=["shares outstanding at quarter end"]),
        {"content": "There were 48,213,772 shares outstanding {{marker:0}}."}])
    report = tmp_path / "quarterly.pdf"
    report.write_bytes(pdf_with_text(["Quarterly filing Q3.", "Shares outstanding at quarter end: 48,213,772."]))
    file = agents_client.files.upload_and_poll(file_path=str(report), purpose=FilePurpose.AGENTS,
                                               polling_interval=POLL)
    vector_store = agents_client.vector_stores.create_and_poll(file_ids=[file.id], name="my_vectorstore",
                                                               polling_interval=POLL)
    assert vector_store.status == "completed" and vector_store.file_counts.completed == 1
    # Two more files join through a batch, polled to the end.
    extra = [agents_client.files.upload(file=(f"note{i}.txt", f"Board note {i}: dividend {i} cents.".encode()),
                                        purpose=FilePurpose.AGENTS) for i in range(2)]
    batch = agents_client.vector_store_file_batches.create_and_poll(
        vector_store_id=vector_store.id, file_ids=[f.id for f in extra], polling_interval=POLL)
    assert batch.status == VectorStoreFileStatus.COMPLETED and batch.file_counts.completed == 2
    batch_files = agents_client.vector_store_file_batches.list_files(vector_store_id=vector_store.id,
                                                                     batch_id=batch.id)
    assert {f.id for f in batch_files} == {f.id for f in extra}
    late = agents_client.files.upload(file=("late.md", b"# Late\nA late memo."), purpose=FilePurpose.AGENTS)
    attached = agents_client.vector_store_files.create_and_poll(vector_store_id=vector_store.id, file_id=late.id,
                                                                polling_interval=POLL)
    assert attached.status == VectorStoreFileStatus.COMPLETED
    assert len(list(agents_client.vector_store_files.list(vector_store_id=vector_store.id))) == 4
    agents_client.vector_store_files.delete(vector_store_id=vector_store.id, file_id=late.id)
    agents_client.files.delete(late.id)
    assert late.id not in {f.id for f in agents_client.files.list().data}
    assert agents_client.vector_stores.get(vector_store.id).file_counts.completed == 3
    assert vector_store.id in {v.id for v in agents_client.vector_stores.list()}

    file_search = FileSearchTool(vector_store_ids=[vector_store.id])
    agent = agents_client.create_agent(model="gpt-4o", name="analyst", instructions="Use your knowledge base.",
                                       tools=file_search.definitions, tool_resources=file_search.resources)
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user",
                                  content="How many shares outstanding were there last quarter?")
    run = agents_client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.COMPLETED, run.last_error
    answer = next(m for m in agents_client.messages.list(thread_id=thread.id) if m.role == MessageRole.AGENT)
    (citation,) = answer.file_citation_annotations
    assert citation.file_citation.file_id == file.id
    assert answer.text_messages[0].text.value == f"There were 48,213,772 shares outstanding {citation.text}."
    assert agents_client.files.get(citation.file_citation.file_id).filename == "quarterly.pdf"

    steps = list(agents_client.run_steps.list(thread_id=thread.id, run_id=run.id, order=ListSortOrder.ASCENDING,
                                              include=[RunAdditionalFieldList.FILE_SEARCH_CONTENTS]))
    results = steps[0].step_details.tool_calls[0].file_search.results
    assert results[0].file_name == "quarterly.pdf" and results[0].score > 0
    assert "48,213,772" in results[0].content[0].text
    plain = agents_client.run_steps.get(thread_id=thread.id, run_id=run.id, step_id=steps[0].id)
    assert not plain.step_details.tool_calls[0].file_search.results[0].content  # only with include
    agents_client.vector_stores.delete(vector_store.id)
    assert vector_store.id not in {v.id for v in agents_client.vector_stores.list()}


class _StreamHandler(AgentEventHandler[None]):
    """Collects the stream and answers ``requires_action`` with a streamed ``submit_tool_outputs``."""

    def __init__(self, client: AgentsClient, functions: FunctionTool) -> None:
        super().__init__()
        self.client = client
        self.functions = functions
        self.deltas: list[str] = []
        self.statuses: list[str] = []
        self.steps: list[str] = []
        self.messages: list[str] = []

    def on_message_delta(self, delta: MessageDeltaChunk) -> None:
        self.deltas.append(delta.text)

    def on_thread_message(self, message: ThreadMessage) -> None:
        if message.status == "completed":
            self.messages.append(message.text_messages[0].text.value)

    def on_run_step(self, step: RunStep) -> None:
        self.steps.append(f"{RunStepType(step.type).value}:{RunStepStatus(step.status).value}")

    def on_thread_run(self, run: ThreadRun) -> None:
        self.statuses.append(RunStatus(run.status).value)
        if run.status == "requires_action" and isinstance(run.required_action, SubmitToolOutputsAction):
            outputs = [ToolOutput(tool_call_id=call.id, output=self.functions.execute(call))
                       for call in run.required_action.submit_tool_outputs.tool_calls
                       if isinstance(call, RequiredFunctionToolCall)]
            self.client.runs.submit_tool_outputs_stream(thread_id=run.thread_id, run_id=run.id,
                                                        tool_outputs=outputs, event_handler=self)


def test_stream_with_event_handler_and_streamed_tool_outputs(agents_client: AgentsClient,
                                                             upstream: harness.Upstream) -> None:
    upstream.script("stream the weather in Oslo", [tool_call("fetch_weather", location="Oslo"),
                                                   {"content": "Oslo: {{last_tool}}", "chunk_chars": 8, "delay_ms": 5}])
    functions = FunctionTool({fetch_weather})
    agent = agents_client.create_agent(model="gpt-4o", name="streamer", tools=functions.definitions)
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user", content="Please stream the weather in Oslo.")
    handler = _StreamHandler(agents_client, functions)
    with agents_client.runs.stream(thread_id=thread.id, agent_id=agent.id, event_handler=handler) as stream:
        stream.until_done()
    expected = "Oslo: " + fetch_weather("Oslo")
    assert "".join(handler.deltas) == expected and len(handler.deltas) > 3
    assert handler.messages == [expected]
    assert handler.statuses[0] == "queued" and "requires_action" in handler.statuses
    assert handler.statuses[-1] == "completed"
    assert "tool_calls:completed" in handler.steps and handler.steps[-1] == "message_creation:completed"
    (run,) = agents_client.runs.list(thread_id=thread.id)
    assert run.status == RunStatus.COMPLETED


def test_stream_with_auto_function_calls(agents_client: AgentsClient, upstream: harness.Upstream) -> None:
    upstream.script("auto weather in Lima", [tool_call("fetch_weather", location="Lima"),
                                             {"content": "Lima: {{last_tool}}"}])
    functions = FunctionTool({fetch_weather})
    agents_client.enable_auto_function_calls(functions)
    agent = agents_client.create_agent(model="gpt-4o", name="auto-streamer", tools=functions.definitions)
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user", content="What is the auto weather in Lima?")
    collected: list[str] = []
    with agents_client.runs.stream(thread_id=thread.id, agent_id=agent.id) as stream:
        for _event, event_data, _result in stream:
            if isinstance(event_data, MessageDeltaChunk):
                collected.append(event_data.text)
    assert "".join(collected) == "Lima: " + fetch_weather("Lima")


def test_create_thread_and_process_run(agents_client: AgentsClient, upstream: harness.Upstream) -> None:
    upstream.script("one call does it all", [{"content": "Done in one call."}])
    agent = agents_client.create_agent(model="gpt-4o", name="oneshot")
    run = agents_client.create_thread_and_process_run(
        agent_id=agent.id, polling_interval=POLL,
        thread=AgentThreadCreationOptions(messages=[ThreadMessageOptions(role="user",
                                                                         content="one call does it all")]))
    assert run.status == RunStatus.COMPLETED, run.last_error
    texts = [m.text_messages[0].text.value
             for m in agents_client.messages.list(thread_id=run.thread_id, order=ListSortOrder.ASCENDING)]
    assert texts == ["one call does it all", "Done in one call."]
    assert run.thread_id in {t.id for t in agents_client.threads.list()}
