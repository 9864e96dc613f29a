"""Evaluation sets generated on the fly (nothing downloaded): see each module's docstring.

Every generator returns ``(corpus, queries, qrels)`` like ``bench_quality.load_set``: corpus
maps a file id to the file's whole text (one file per entry), qrels map query ids to the
relevant file ids. They are deterministic (fixed seeds), so every run scores the same data.
"""
