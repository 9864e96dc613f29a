"""The File Search snippets of the Azure doc (seed 004), run as written against Spindle.

Run with any SDK venv from a directory holding mydirectory/myfile1.pdf, myfile2.txt and
myfile.pdf, with AZURE_OPENAI_ENDPOINT / AZURE_OPENAI_API_KEY pointing at the server. SDKs
up to 1.65 have ``client.beta.vector_stores`` (the doc's spelling); later ones moved the same
calls to ``client.vector_stores``, so the one alias below is the only change for them.
The doc's ``vector_stores.create_and_poll`` exists in no SDK version; ``create`` plus polling
the files stands in for it. Prints one JSON object with what the test checks.
"""

import json
import os

from openai import AssistantEventHandler, AzureOpenAI
from typing_extensions import override

client = AzureOpenAI(
    api_key=os.getenv("AZURE_OPENAI_API_KEY"),
    api_version="2024-05-01-preview",
    azure_endpoint=os.getenv("AZURE_OPENAI_ENDPOINT"),
)
vector_stores = client.beta.vector_stores if hasattr(client.beta, "vector_stores") else client.vector_stores
out = {}

assistant = client.beta.assistants.create(
    name="Financial Analyst Assistant",
    instructions="You are an expert financial analyst. Use your knowledge base to answer questions about audited financial statements.",
    model="gpt-4-turbo",
    tools=[{"type": "file_search"}],
)

# Create a vector store called "Financial Statements"
vector_store = vector_stores.create(name="Financial Statements")

# Ready the files for upload to OpenAI
file_paths = ["mydirectory/myfile1.pdf", "mydirectory/myfile2.txt"]
file_streams = [open(path, "rb") for path in file_paths]

# Use the upload and poll SDK helper to upload the files, add them to the vector store,
# and poll the status of the file batch for completion.
file_batch = vector_stores.file_batches.upload_and_poll(vector_store_id=vector_store.id, files=file_streams)

# You can print the status and the file counts of the batch to see the result of this operation.
print(file_batch.status)
print(file_batch.file_counts)
out["batch"] = {"status": file_batch.status, "completed": file_batch.file_counts.completed,
                "total": file_batch.file_counts.total}

assistant = client.beta.assistants.update(
    assistant_id=assistant.id,
    tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}},
)

# Upload the user provided file to OpenAI
message_file = client.files.create(file=open("mydirectory/myfile.pdf", "rb"), purpose="assistants")

# Create a thread and attach the file to the message
thread = client.beta.threads.create(
    messages=[
        {
            "role": "user",
            "content": "How many company shares were outstanding last quarter?",
            # Attach the new file to the message.
            "attachments": [{"file_id": message_file.id, "tools": [{"type": "file_search"}]}],
        }
    ]
)

# The thread now has a vector store with that file in its tool resources.
print(thread.tool_resources.file_search)
out["thread_stores"] = thread.tool_resources.file_search.vector_store_ids


class EventHandler(AssistantEventHandler):
    @override
    def on_text_created(self, text) -> None:
        print("\nassistant > ", end="", flush=True)

    @override
    def on_tool_call_created(self, tool_call):
        print(f"\nassistant > {tool_call.type}\n", flush=True)
        out.setdefault("tool_calls", []).append(tool_call.type)

    @override
    def on_message_done(self, message) -> None:
        # print a citation to the file searched
        message_content = message.content[0].text
        annotations = message_content.annotations
        citations = []
        for index, annotation in enumerate(annotations):
            message_content.value = message_content.value.replace(annotation.text, f"[{index}]")
            if file_citation := getattr(annotation, "file_citation", None):
                cited_file = client.files.retrieve(file_citation.file_id)
                citations.append(f"[{index}] {cited_file.filename}")

        print(message_content.value)
        print("\n".join(citations))
        out["answer"] = message_content.value
        out["citations"] = citations


# Then, we use the stream SDK helper
# with the EventHandler class to create the Run
# and stream the response.
with client.beta.threads.runs.stream(
    thread_id=thread.id,
    assistant_id=assistant.id,
    instructions="Please address the user as Jane Doe. The user has a premium account.",
    event_handler=EventHandler(),
) as stream:
    stream.until_done()

ids = [client.files.create(file=open(p, "rb"), purpose="assistants").id for p in file_paths]
vector_store = vector_stores.create(
    name="Product Documentation",
    file_ids=ids,
    expires_after={"anchor": "last_active_at", "days": 7},
)
for file_id in ids:
    vector_stores.files.poll(file_id, vector_store_id=vector_store.id)
out["expires_after_days"] = vector_stores.retrieve(vector_store.id).expires_after.days

extra = client.files.create(file=open("mydirectory/myfile2.txt", "rb"), purpose="assistants")
file = vector_stores.files.create_and_poll(vector_store_id=vector_store.id, file_id=extra.id)
batch = vector_stores.file_batches.create_and_poll(vector_store_id=vector_store.id, file_ids=[message_file.id])
out["file_status"], out["batch2_status"] = file.status, batch.status


def chunked(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


all_files = list(vector_stores.files.list(vector_store.id))

vector_store = vector_stores.create(name="rag-store")
client.beta.threads.update(
    thread.id,
    tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}},
)

for file_batch in chunked(all_files, 100):
    vector_stores.file_batches.create_and_poll(
        vector_store_id=vector_store.id, file_ids=[file.id for file in file_batch]
    )
out["rebuilt_completed"] = vector_stores.retrieve(vector_store.id).file_counts.completed
out["rebuilt_attached"] = client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids
out["rebuilt_id"] = vector_store.id
print("RESULT " + json.dumps(out))
