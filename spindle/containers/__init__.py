"""The Containers API: a durable container row per Code Interpreter session (see docs/responses.md)."""
