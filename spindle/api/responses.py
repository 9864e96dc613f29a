"""JSON responses that can always be encoded.

Bodies are checked for invalid Unicode at the edge, but text also comes from elsewhere: the
upstream model's JSON can carry ``\\ud800`` escapes, and objects stored before that check
existed may hold lone surrogates. One such string must never turn a list into a 500 for the
whole project, so a body that cannot be encoded as UTF-8 is sent with each lone surrogate
replaced by U+FFFD (what a UTF-8 decoder shows for a broken sequence); nothing stored changes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.responses import JSONResponse

_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_json(content: Any) -> bytes:
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # rare: only then pay for the substitution
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


class SafeJSONResponse(JSONResponse):
    """The app's default response class (``create_app``); routers that build a response
    themselves use it too."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)
