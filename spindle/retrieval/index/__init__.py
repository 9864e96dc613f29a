"""A store's index on disk: ``chunkstore`` (SQLite, the source of truth), ``keyword`` (tantivy
BM25), ``vectors`` (faiss), combined by ``store.StoreIndex``."""
