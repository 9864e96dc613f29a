"""The stores, chosen by URL from settings: no plugins, one explicit branch per backend."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from spindle.settings import ServerSettings
from spindle.store.base import BlobStore, MetadataStore


class StoreConfigError(ValueError):
    """SPINDLE_DATABASE_URL names something we cannot open (said at start, before serving)."""


def metadata_store(server: ServerSettings) -> MetadataStore:
    url = server.database_url.strip()
    if not url:
        from spindle.store.sqlite import SQLiteStore

        return SQLiteStore(server.data_dir / "spindle.db")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from spindle.store.postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "sqlite":
        from pathlib import Path

        from spindle.store.sqlite import SQLiteStore

        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise StoreConfigError("SPINDLE_DATABASE_URL: use sqlite:////absolute/path.db (three slashes, then the path)")
        return SQLiteStore(Path(path[1:] if path.startswith("//") else path))
    raise StoreConfigError(f"SPINDLE_DATABASE_URL: unsupported scheme {scheme!r}; use postgresql://... or leave it "
                           "empty for the embedded SQLite")


def blob_store(server: ServerSettings) -> BlobStore:
    url = server.blob_url.strip()
    if not url:
        from spindle.store.blobs import LocalBlobStore

        return LocalBlobStore(server.data_dir / "files")
    if urlsplit(url).scheme.lower() == "s3":
        from spindle.store.s3 import S3BlobStore

        return S3BlobStore(url, server.data_dir)
    raise StoreConfigError(f"SPINDLE_BLOB_URL: unsupported scheme in {url!r}; use s3://bucket/prefix or leave it "
                           "empty for the data dir")


def describe(url: str, empty: str = "embedded SQLite") -> str:
    """The URL for logs and the start banner, password removed (``empty`` names the default)."""
    if not url.strip():
        return empty
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
