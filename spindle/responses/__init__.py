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
    service = ResponseService(runtime)
    runtime.extensions.update(responses=service, conversations=ConversationService(runtime),
                              containers=ContainerService(runtime))
    # On the run sweep's beat: purge what store=false responses of dead processes left.
    runtime.extensions.setdefault("sweepers", []).append(service.ephemeral.sweep)
    install_hook(runtime)
