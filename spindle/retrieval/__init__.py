"""The retrieval library behind File Search: parse, chunk, embed, index, search.

Independent of the HTTP layer and the metadata store; everything here is blocking and meant to
run on worker threads. The vector store service (``spindle.vector_stores``) drives it.

    parsers      bytes of a listed file type -> text (``IngestError`` otherwise)
    tokenizer    o200k_base, offline
    chunker      token windows as the API defines them
    embedding    the local MiniLM embedder and an OpenAI-compatible client
    index        one store's SQLite + tantivy + faiss index
    pipeline     one file: parse -> chunk -> keyword index -> embed -> vector index
    search       hybrid search over stores: BM25 + vectors, RRF, ranker, threshold
    filters      attribute filters
    settings     ``RetrievalSettings`` (``SPINDLE_RETRIEVAL_*``, ``SPINDLE_EMBEDDINGS_*``)
"""

from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.errors import IngestError
from spindle.retrieval.search import SearchHit, SearchOptions, search
from spindle.retrieval.settings import RetrievalSettings

__all__ = ["ChunkingStrategy", "IngestError", "RetrievalSettings", "SearchHit", "SearchOptions", "search"]
