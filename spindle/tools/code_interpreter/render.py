"""Turn a call's outputs into text: the step's ``logs`` and the tool message for the model.

Tracebacks arrive with ANSI colour codes (IPython colours them); both the step and the model
get plain text. Long output is cut in the middle by the recorder (the start shows what
happened, the end shows how it finished) with a note saying how much was dropped, so one
``print(df)`` of a large frame cannot flood the model's context.
"""

from __future__ import annotations

import re

from spindle.sandbox import ErrorOutput, Output, TextOutput

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def output_text(output: Output) -> str:
    """The plain-text form of one output (images have none)."""
    if isinstance(output, TextOutput):
        text = strip_ansi(output.text)
        if output.kind in ("result", "display") and not text.endswith("\n"):
            text += "\n"
        return text
    if isinstance(output, ErrorOutput):
        lines = [strip_ansi(line) for line in output.traceback] or [f"{output.ename}: {output.evalue}"]
        return "\n".join(lines).rstrip("\n") + "\n"
    return ""


def head_size(limit: int) -> int:
    """How much of the beginning of long logs is kept (the part streamed live); the rest of
    ``limit`` goes to the end."""
    return int(limit * 0.6)


def _listing(items: list[str], budget: int) -> str:
    """``items`` joined with ", " within ``budget`` characters, then how many were left out."""
    full = ", ".join(items)
    if len(full) <= budget:
        return full
    room = budget - len(f" ... and {len(items)} more")
    out = ""
    for n, item in enumerate(items):
        piece = item if not out else ", " + item
        if len(out) + len(piece) > room:
            return f"{out} ... and {len(items) - n} more"
        out += piece
    return out


def cut_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, its middle replaced by a note saying how much."""
    if len(text) <= limit:
        return text
    note_len = len(f"\n[... {len(text)} characters truncated ...]\n")
    keep = max(0, limit - note_len)
    head = head_size(keep)
    tail = keep - head
    dropped = len(text) - head - tail
    return (
        f"{text[:head]}\n[... {dropped} characters truncated ...]\n{text[len(text) - tail :] if tail else ''}"
    )


def model_output(
    logs: str,
    *,
    images: int,
    written: list[str],
    skipped: list[str],
    notes: list[str],
    max_chars: int,
) -> str:
    """The tool message the model reads after one call, never longer than ``max_chars``:
    listings are cut to a share of it ("... and N more"), the logs get what is left."""
    share = max(200, max_chars // 5)
    extra: list[str] = []
    if images:
        extra.append(f"[{images} image{'s' if images > 1 else ''} displayed to the user]")
    if written:
        listing = _listing([f"sandbox:/mnt/data/{p}" for p in written], share)
        extra.append(f"[files saved, link them in your answer as {listing}]")
    if skipped:
        extra.append(
            f"[not exported (too large or too many): {_listing(['/mnt/data/' + p for p in skipped], share)}]"
        )
    for note in notes:
        extra.append(f"[{cut_middle(note, share)}]")
    parts: list[str] = []
    rest = "\n\n".join(extra)
    if len(rest) > max_chars:
        rest = cut_middle(rest, max_chars)
    if logs.strip():
        room = max_chars - len(rest) - (2 if rest else 0)
        if room > 0:
            parts.append(cut_middle(logs.rstrip("\n"), room))
    if rest:
        parts.append(rest)
    if not parts:
        return "[the code ran without output]"
    return "\n\n".join(parts)[:max_chars]
