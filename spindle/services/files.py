"""Files: metadata in the store, bytes in the blob store.

The object is written only after its bytes are safely in the blob store, so a failed or
cut-off upload never leaves a file object without content. Deleting a file also runs the
registered deletion hooks (vector stores drop it from every store).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.store.base import BlobStore, Delete, MetadataStore, Put

PURPOSES = ("assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results",
            "vision", "user_data", "evals")

# The Assistants file types (both tools' tables in the Azure docs) with their MIME types.
_TYPES = {
    ".c": "text/x-c", ".cs": "text/x-csharp", ".cpp": "text/x-c++", ".csv": "application/csv",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".html": "text/html", ".java": "text/x-java", ".json": "application/json", ".md": "text/markdown",
    ".pdf": "application/pdf", ".php": "text/x-php",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".py": "text/x-python", ".rb": "text/x-ruby", ".tex": "text/x-tex", ".txt": "text/plain",
    ".css": "text/css", ".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".js": "text/javascript",
    ".gif": "image/gif", ".png": "image/png", ".tar": "application/x-tar", ".ts": "application/typescript",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xml": "application/xml",
    ".zip": "application/zip", ".sh": "application/x-sh", ".jsonl": "application/jsonl",
}

DeleteHook = Callable[[str, str], Awaitable[None]]


def content_type_for(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


class FileService:
    def __init__(self, store: MetadataStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self._delete_hooks: list[DeleteHook] = []

    def add_delete_hook(self, hook: DeleteHook) -> None:
        """``hook(project, file_id)`` runs before a file object is deleted."""
        self._delete_hooks.append(hook)

    @staticmethod
    def check_purpose(purpose: str | None) -> str:
        if not purpose:
            raise InvalidRequestError("Missing required parameter: 'purpose'.", param="purpose",
                                      code="missing_required_parameter")
        if purpose not in PURPOSES:
            raise InvalidRequestError(
                f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose", code="invalid_value"
            )
        return purpose

    def _object(self, file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
        return {
            "id": file_id, "object": "file", "bytes": size, "created_at": now(), "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None, "expires_at": None,
        }

    async def create_from_staged(self, project: str, *, filename: str, staged: Path, size: int,
                                 purpose: str) -> dict[str, Any]:
        file_id = new_id("file-")
        await self.blobs.put_file(file_id, staged)
        return await self._record(project, self._object(file_id, filename, size, purpose))

    async def create(self, project: str, *, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        """Create a file from bytes (used by tools, e.g. Code Interpreter outputs)."""
        file_id = new_id("file-")
        await self.blobs.put_bytes(file_id, data)
        return await self._record(project, self._object(file_id, filename, len(data), purpose))

    async def _record(self, project: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Write the object for bytes already stored; without it, the bytes are removed."""
        try:
            await self.store.write([Put("file", obj, project)])
        except BaseException:
            await self.blobs.delete(obj["id"])
            raise
        return obj

    async def get(self, project: str, file_id: str, param: str = "file_id") -> dict[str, Any]:
        obj = await self.store.get("file", file_id, project)
        if obj is None:
            raise NotFoundError(f"No such File object: {file_id}", param=param)
        return obj

    async def require_all(self, project: str, file_ids: list[str], param: str) -> None:
        """400 naming the parameter when any id is not a file of this project.

        ``param`` names the list (``...file_ids`` → ``...file_ids[i]``) or, ending in ``]``,
        the one object holding the id (``attachments[2]`` → ``attachments[2].file_id``)."""
        for i, file_id in enumerate(file_ids):
            if not isinstance(file_id, str) or await self.store.get("file", file_id, project) is None:
                where = f"{param}.file_id" if param.endswith("]") else f"{param}[{i}]"
                raise InvalidRequestError(f"Invalid file id '{file_id}': no such file.", param=where,
                                          code="invalid_value")

    async def read(self, project: str, file_id: str) -> bytes:
        await self.get(project, file_id)
        return await self.blobs.read(file_id)

    async def local_path(self, project: str, file_id: str) -> Path:
        await self.get(project, file_id)
        return await self.blobs.local_path(file_id)

    async def delete(self, project: str, file_id: str) -> dict[str, Any]:
        await self.get(project, file_id)
        for hook in self._delete_hooks:
            await hook(project, file_id)
        await self.store.write([Delete("file", file_id)])
        await self.blobs.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}
