"""Agents, threads and messages with the azure-ai-agents SDK on both endpoint forms, and how
Spindle treats the project segment and the SDK's credentials."""

from __future__ import annotations

from collections.abc import Callable

import harness
import httpx
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import ListSortOrder, MessageRole, RunStatus
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from foundry import KEY, OTHER_KEY, OTHER_PROJECT, PROJECT


def test_agents_create_get_list_update_delete(agents_client: AgentsClient) -> None:
    created = [agents_client.create_agent(model="gpt-4o", name=f"agent-{i}", instructions="You are helpful.",
                                          metadata={"n": str(i)}) for i in range(3)]
    fetched = agents_client.get_agent(created[1].id)
    assert (fetched.name, fetched.instructions, fetched.model) == ("agent-1", "You are helpful.", "gpt-4o")
    # limit=2 makes the SDK page through `after` until a page's last_id is null.
    ids = [a.id for a in agents_client.list_agents(limit=2, order=ListSortOrder.ASCENDING)]
    mine = [a.id for a in created]
    assert [i for i in ids if i in mine] == mine
    updated = agents_client.update_agent(created[0].id, name="renamed", instructions="Be brief.")
    assert (updated.name, updated.instructions) == ("renamed", "Be brief.")
    assert agents_client.get_agent(created[0].id).name == "renamed"
    for agent in created:
        agents_client.delete_agent(agent.id)
    with pytest.raises(ResourceNotFoundError):
        agents_client.get_agent(created[0].id)
    assert not set(mine) & {a.id for a in agents_client.list_agents()}


def test_threads_incl_list_and_messages(agents_client: AgentsClient,
                                        make_client: Callable[..., AgentsClient], endpoint_form: str) -> None:
    other = make_client(endpoint_form, key=OTHER_KEY, project=OTHER_PROJECT)
    foreign = other.threads.create(metadata={"owner": "beta"})
    threads = [agents_client.threads.create(metadata={"i": str(i)}) for i in range(3)]
    assert agents_client.threads.get(threads[0].id).metadata == {"i": "0"}
    assert agents_client.threads.update(threads[0].id, metadata={"i": "zero"}).metadata == {"i": "zero"}
    listed = [t.id for t in agents_client.threads.list(limit=2)]  # newest first, paged
    mine = [t.id for t in threads]
    assert [i for i in listed if i in mine] == mine[::-1]
    assert foreign.id not in listed  # another project's thread is never listed
    assert foreign.id in {t.id for t in other.threads.list()}
    assert not set(mine) & {t.id for t in other.threads.list()}
    ascending = [t.id for t in agents_client.threads.list(order=ListSortOrder.ASCENDING)]
    assert [i for i in ascending if i in mine] == mine

    thread = threads[1]
    first = agents_client.messages.create(thread_id=thread.id, role=MessageRole.USER, content="first question")
    agents_client.messages.create(thread_id=thread.id, role="user", content="second question")
    assert agents_client.messages.get(thread_id=thread.id, message_id=first.id).text_messages[0].text.value \
        == "first question"
    assert agents_client.messages.update(thread_id=thread.id, message_id=first.id,
                                         metadata={"seen": "yes"}).metadata == {"seen": "yes"}
    texts = [m.text_messages[0].text.value
             for m in agents_client.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING, limit=1)]
    assert texts == ["first question", "second question"]
    agents_client.threads.delete(thread.id)
    with pytest.raises(ResourceNotFoundError):
        agents_client.threads.get(thread.id)
    assert thread.id not in {t.id for t in agents_client.threads.list()}


def test_run_and_last_message(agents_client: AgentsClient, upstream: harness.Upstream) -> None:
    upstream.script("capital of France", [{"content": "Paris."}])
    agent = agents_client.create_agent(model="gpt-4o", name="geo", instructions="Answer briefly.")
    thread = agents_client.threads.create()
    agents_client.messages.create(thread_id=thread.id, role="user", content="What is the capital of France?")
    run = agents_client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=0.1)
    assert run.status == RunStatus.COMPLETED, run.last_error
    last = agents_client.messages.get_last_message_text_by_role(thread_id=thread.id, role=MessageRole.AGENT)
    assert last is not None and last.text.value == "Paris."
    assert agents_client.runs.get(thread_id=thread.id, run_id=run.id).status == RunStatus.COMPLETED
    assert [r.id for r in agents_client.runs.list(thread_id=thread.id)] == [run.id]
    (request,) = upstream.requests()
    assert request["model"] == "gpt-4o"
    assert request["messages"][0] == {"role": "system", "content": "Answer briefly."}


# -- credentials and the project segment -------------------------------------------------------

@pytest.mark.parametrize("auth", ["bearer", "api-key"])
def test_both_credentials_on_the_documented_endpoint(make_client: Callable[..., AgentsClient], auth: str) -> None:
    client = make_client("projects", auth=auth)
    agent = client.create_agent(model="m", name=f"via-{auth}")
    assert client.get_agent(agent.id).name == f"via-{auth}"
    client.delete_agent(agent.id)


def test_wrong_key_is_refused(make_client: Callable[..., AgentsClient]) -> None:
    for form in ("projects", "openai"):
        with pytest.raises(ClientAuthenticationError):
            make_client(form, key="sk-not-a-key").create_agent(model="m")


def test_project_segment_must_be_the_keys_project(make_client: Callable[..., AgentsClient],
                                                   spindle_server: harness.SpindleServer) -> None:
    # alpha's key on beta's endpoint: refused, and nothing of beta's is seen or made.
    beta_agent = make_client("projects", key=OTHER_KEY, project=OTHER_PROJECT).create_agent(model="m")
    crossed = make_client("projects", key=KEY, project=OTHER_PROJECT)
    with pytest.raises(ResourceNotFoundError) as caught:
        crossed.get_agent(beta_agent.id)
    assert f"'{PROJECT}'" in str(caught.value)
    with pytest.raises(ResourceNotFoundError):
        crossed.create_agent(model="m")
    assert beta_agent.id not in {a.id for a in make_client("projects").list_agents()}
    # The SDK's error model reads the OpenAI envelope's code.
    response = httpx.get(f"{spindle_server.base_url}/api/projects/{OTHER_PROJECT}/assistants",
                         params={"api-version": "v1"}, headers={"api-key": KEY})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "project_not_found"
    assert response.json()["error"]["param"] == "project"


def test_api_versions(spindle_server: harness.SpindleServer) -> None:
    url = spindle_server.base_url
    headers = {"authorization": f"Bearer {KEY}"}
    for prefix in (f"/api/projects/{PROJECT}", "/openai"):
        for version in ("v1", "2025-05-15-preview", "2024-05-01-preview"):
            response = httpx.get(f"{url}{prefix}/threads", params={"api-version": version}, headers=headers)
            assert response.status_code == 200, (prefix, version, response.text)
            assert response.json()["object"] == "list"
        missing = httpx.get(f"{url}{prefix}/threads", headers=headers)
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
        bad = httpx.get(f"{url}{prefix}/threads", params={"api-version": "v9"}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "api-version"


