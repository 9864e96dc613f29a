"""The Responses and Conversations APIs on the run engine (see docs/responses.md)."""

from __future__ import annotations

from spindle.engine.execution import EXECUTION_KINDS
from spindle.runtime import Runtime


def install(runtime: Runtime) -> None:
    """Register the response kind of run with the engine and the services with the runtime."""
    from spindle.containers.service import ContainerService
    from spindle.responses.containers import install_hook
    from spindle.responses.conversations import ConversationService
    from spindle.responses.execution import ResponseExecution
    from spindle.responses.service import KIND, ResponseService

    EXECUTION_KINDS[KIND] = ResponseExecution
    runtime.extensions.update(responses=ResponseService(runtime), conversations=ConversationService(runtime),
                              containers=ContainerService(runtime))
    install_hook(runtime)
