"""File Search through the real server and SDK: the seed's snippets as written (SDK 1.40.x
with AzureOpenAI and client.beta.vector_stores; SDK 3.x with client.vector_stores)."""

from __future__ import annotations

import json
import time
from typing import Any

import harness
import openai
import pytest
from samples import pdf_with_text

pytestmark = pytest.mark.min_sdk(1, 21)  # vector stores are v2


def vector_stores(client: Any) -> Any:
    """``client.beta.vector_stores`` up to SDK 1.65, ``client.vector_stores`` after."""
    return getattr(client, "vector_stores", None) or client.beta.vector_stores


def search_call(*queries: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": list(queries)})}]}


def test_seed_file_search_flow(openai_client: Any, upstream: harness.Upstream, tmp_path: Any) -> None:
    client = openai_client
    upstream.script("shares were outstanding last quarter", [
        search_call("shares outstanding last quarter"),
        {"content": "There were 48,213,772 shares outstanding {{marker:0}}.", "chunk_chars": 3}])
    assistant = client.beta.assistants.create(
        name="Financial Analyst Assistant",
        instructions="You are an expert financial analyst. Use your knowledge base to answer questions about "
                     "audited financial statements.",
        model="gpt-4-turbo", tools=[{"type": "file_search"}])
    vector_store = vector_stores(client).create(name="Financial Statements")
    (tmp_path / "mydirectory").mkdir()
    pdf = tmp_path / "mydirectory" / "myfile1.pdf"
    pdf.write_bytes(pdf_with_text(["Annual report 2023.", "Revenue grew 12 percent to 4.1 billion dollars."]))
    txt = tmp_path / "mydirectory" / "myfile2.txt"
    txt.write_text("Board minutes. The board approved a dividend of 0.42 dollars per share.\n")
    file_paths = [str(pdf), str(txt)]
    file_streams = [open(path, "rb") for path in file_paths]
    file_batch = vector_stores(client).file_batches.upload_and_poll(vector_store_id=vector_store.id,
                                                                    files=file_streams)
    for stream in file_streams:
        stream.close()
    assert file_batch.status == "completed"
    assert file_batch.file_counts.completed == 2 and file_batch.file_counts.failed == 0
    assistant = client.beta.assistants.update(
        assistant_id=assistant.id, tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}})
    assert assistant.tool_resources.file_search.vector_store_ids == [vector_store.id]

    quarterly = tmp_path / "mydirectory" / "myfile.pdf"
    quarterly.write_bytes(pdf_with_text(["Quarterly filing Q3.", "Shares outstanding at quarter end: 48,213,772."]))
    with open(quarterly, "rb") as handle:
        message_file = client.files.create(file=handle, purpose="assistants")
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "How many company shares were outstanding last quarter?",
        "attachments": [{"file_id": message_file.id, "tools": [{"type": "file_search"}]}]}])
    thread_stores = thread.tool_resources.file_search.vector_store_ids
    assert len(thread_stores) == 1
    thread_store = vector_stores(client).retrieve(thread_stores[0])
    assert thread_store.expires_after.anchor == "last_active_at" and thread_store.expires_after.days == 7

    citations: list[str] = []
    done: list[Any] = []

    class EventHandler(openai.AssistantEventHandler):
        def on_tool_call_created(self, tool_call: Any) -> None:
            done.append(tool_call.type)

        def on_message_done(self, message: Any) -> None:
            message_content = message.content[0].text
            annotations = message_content.annotations
            for index, annotation in enumerate(annotations):
                message_content.value = message_content.value.replace(annotation.text, f"[{index}]")
                if file_citation := getattr(annotation, "file_citation", None):
                    cited_file = client.files.retrieve(file_citation.file_id)
                    citations.append(cited_file.filename)
            done.append(message_content.value)

    with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id,
            instructions="Please address the user as Jane Doe. The user has a premium account.",
            event_handler=EventHandler()) as stream:
        stream.until_done()
    assert done[0] == "file_search"
    assert done[-1] == "There were 48,213,772 shares outstanding [0]."
    assert citations == ["myfile.pdf"]
    run = stream.get_final_run()
    # include[] is a keyword from SDK 1.41 on; older SDKs send it as a query parameter.
    content = "step_details.tool_calls[*].file_search.results[*].content"
    options = {"include": [content]} if harness.openai_version() >= (1, 41) else {"extra_query": {"include[]": content}}
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc", **options).data
    search = steps[0].step_details.tool_calls[0].file_search
    results = search["results"] if isinstance(search, dict) else [r.model_dump() for r in search.results]
    assert results and results[0]["file_name"] == "myfile.pdf" and results[0]["score"] > 0
    assert "48,213,772" in results[0]["content"][0]["text"]
    assert vector_stores(client).retrieve(thread_stores[0]).last_active_at >= thread_store.last_active_at


def test_create_and_poll_helpers_and_rebuilt_store(openai_client: Any, upstream: harness.Upstream) -> None:
    client = openai_client
    files = [client.files.create(file=(f"doc{i}.md", f"# Doc {i}\nThe code word for doc {i} is zebra-{i}.\n".encode()),
                                 purpose="assistants") for i in range(5)]
    # The seed writes vector_stores.create_and_poll(...), a helper no SDK version has; this is
    # the same call followed by the polling the helper would do.
    vector_store = vector_stores(client).create(
        name="Product Documentation", file_ids=[f.id for f in files[:2]],
        expires_after={"anchor": "last_active_at", "days": 7})
    deadline = time.monotonic() + 60
    while vector_store.file_counts.in_progress and time.monotonic() < deadline:
        time.sleep(0.1)
        vector_store = vector_stores(client).retrieve(vector_store.id)
    assert vector_store.status == "completed" and vector_store.file_counts.completed == 2
    assert vector_store.expires_after.days == 7 and vector_store.expires_at is not None
    file = vector_stores(client).files.create_and_poll(vector_store_id=vector_store.id, file_id=files[2].id)
    assert file.status == "completed"
    batch = vector_stores(client).file_batches.create_and_poll(vector_store_id=vector_store.id,
                                                               file_ids=[f.id for f in files[3:]])
    assert batch.status == "completed" and batch.file_counts.completed == 2

    # Re-attaching a rebuilt store, as the seed shows for an expired one.
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I cancel my subscription?"}],
                                        tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}})
    all_files = list(vector_stores(client).files.list(vector_store.id))
    assert len(all_files) == 5
    rebuilt = vector_stores(client).create(name="rag-store")
    client.beta.threads.update(thread.id, tool_resources={"file_search": {"vector_store_ids": [rebuilt.id]}})

    def chunked(items: list[Any], size: int) -> list[list[Any]]:
        return [items[i:i + size] for i in range(0, len(items), size)]

    for file_batch in chunked(all_files, 100):
        vector_stores(client).file_batches.create_and_poll(vector_store_id=rebuilt.id,
                                                           file_ids=[file.id for file in file_batch])
    assert client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids == [rebuilt.id]
    assert vector_stores(client).retrieve(rebuilt.id).file_counts.completed == 5


@pytest.mark.min_sdk(1, 66)
def test_search_endpoint_finds_the_fact(openai_client: Any) -> None:
    client = openai_client
    store = client.vector_stores.create(name="facts")
    fact = client.files.create(file=("facts.txt", b"The lighthouse keeper's cat is named Bartholomew.\n"),
                               purpose="assistants")
    other = client.files.create(file=("other.txt", b"Quarterly revenue tables and nothing about animals.\n"),
                                purpose="assistants")
    client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=[fact.id, other.id])
    page = client.vector_stores.search(vector_store_id=store.id, query="what is the cat called?")
    assert page.data and page.data[0].file_id == fact.id and "Bartholomew" in page.data[0].content[0].text
