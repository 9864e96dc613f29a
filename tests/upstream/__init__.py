"""A scripted upstream model: a real HTTP server speaking the OpenAI chat-completions protocol.

It is the only stand-in our tests allow for a model. Tests script it over HTTP
(``POST /_script`` with ``{"match": substring, "replies": [...]}``), or, in-process, through
the handle ``start_in_thread()`` returns; ``GET /_requests`` shows what the server under test
sent. Unscripted requests get ``"You said: <last user text>"``, streamed instantly.

Run it alone with ``python -m tests.upstream --port P``. It needs starlette and uvicorn, so it
runs under the main venv; the SDK-only test venvs start it as a subprocess.

Relative imports throughout: pytest imports this package as ``upstream`` and the CLI as
``tests.upstream``, and both must work.
"""

from .app import create_app
from .script import Reply, ScriptBook, ScriptError
from .server import UpstreamHandle, serve, start_in_thread

__all__ = ["Reply", "ScriptBook", "ScriptError", "UpstreamHandle", "create_app", "serve", "start_in_thread"]
