"""The security suite: attacks through the public API and, for the kernel channel, through the
sandbox provider with real hostile code. One file per surface:

  test_sandbox_channel.py   the model's code against the server (kernel messages, files, paths)
  test_documents.py         hostile and mislabelled documents against File Search ingestion
  test_http_input.py        hostile HTTP bodies, headers and connections
  test_concurrency.py       racing requests against the store's invariants

Each file imports the fixtures it needs from the tier it attacks (``tests.unit.conftest``: the
real app with the scripted upstream; ``tests.retrieval.conftest``: the same with the embedder;
``tests.sandbox.conftest``: a real bubblewrap session manager), so the tiers' fixtures of the
same name never meet in one module.
"""
