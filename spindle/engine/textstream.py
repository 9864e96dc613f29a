"""Streams an assistant message's text with its annotations.

Tools annotate the text (citations ``【n:m†file】``, ``sandbox:/mnt/data/...`` links). While
a marker may still be forming, its tail is held back, so every annotation goes out in the
same delta as the text it covers and no delta is ever taken back. Each annotation is sent
once with its own ``index``: the SDK adds up numbers it sees twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Annotator = Callable[[str], list[dict[str, Any]]]
Pending = Callable[[str], int | None]


class AnnotatedText:
    def __init__(self, annotators: list[Annotator], pending: list[Pending]) -> None:
        self.annotators = annotators
        self.pending = pending
        self.text = ""
        self.sent = 0
        self.annotations: list[dict[str, Any]] = []
        self._sent_spans: set[tuple[int, int]] = set()

    def feed(self, chunk: str) -> tuple[str, list[dict[str, Any]]] | None:
        """Add model text; returns the (text, new annotations) that can go out now."""
        self.text += chunk
        hold = len(self.text)
        for check in self.pending:
            at = check(self.text)
            if at is not None and at >= self.sent:
                hold = min(hold, at)
        return self._release(hold)

    def flush(self) -> tuple[str, list[dict[str, Any]]] | None:
        """Release everything (the model's turn ended)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> tuple[str, list[dict[str, Any]]] | None:
        if upto <= self.sent:
            return None
        segment = self.text[self.sent:upto]
        new = []
        for annotate in self.annotators:
            for item in annotate(self.text[:upto]):
                span = (item["start_index"], item["end_index"])
                if span in self._sent_spans or item["start_index"] < self.sent or item["end_index"] > upto:
                    continue
                self._sent_spans.add(span)
                new.append(item)
        new.sort(key=lambda a: a["start_index"])
        base = len(self.annotations)
        indexed = [{"index": base + i, **a} for i, a in enumerate(new)]
        self.annotations.extend(new)
        self.sent = upto
        return segment, indexed
