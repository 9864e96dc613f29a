"""Why a file could not be ingested, in the codes a vector store file reports.

``last_error.code`` of a vector store file is one of ``unsupported_file`` (a type File Search
does not read), ``invalid_file`` (corrupt, undecodable, encrypted, too large, or without any
text) or ``server_error`` (our fault). Parsers raise ``IngestError``; anything else escaping
the pipeline is logged and reported as ``server_error``.
"""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal["unsupported_file", "invalid_file", "server_error"]


class IngestError(Exception):
    """A file failed ingestion for a reason the user should see."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def unsupported(message: str) -> IngestError:
    return IngestError("unsupported_file", message)


def invalid(message: str) -> IngestError:
    return IngestError("invalid_file", message)
