"""The process-wide wiring: settings, storage backends, services, tools, the run engine.

Built once by ``build_runtime`` from settings with explicit factories (no dotted-path magic),
and handed to routes, the engine and tools. Nothing here holds durable state: that lives in
the metadata store and the blob store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spindle.engine.events import EventLog
    from spindle.engine.runner import RunEngine
    from spindle.llm.client import ChatModel
    from spindle.services.files import FileService
    from spindle.settings import Settings
    from spindle.store.base import BlobStore, MetadataStore
    from spindle.tools.base import BuiltinTool


@dataclass
class Runtime:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore
    files: FileService
    events: EventLog
    model: ChatModel
    tools: dict[str, BuiltinTool] = field(default_factory=dict)
    engine: RunEngine | None = None
    # Subsystems (vector stores, sandbox sessions) register themselves here by name.
    extensions: dict[str, Any] = field(default_factory=dict)
