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


def model_output(
    logs: str,
    *,
    images: int,
    written: list[str],
    skipped: list[str],
    notes: list[str],
) -> str:
    """The tool message the model reads after one call."""
    parts: list[str] = []
    if logs.strip():
        parts.append(logs.rstrip("\n"))
    if images:
        parts.append(f"[{images} image{'s' if images > 1 else ''} displayed to the user]")
    if written:
        listing = ", ".join(f"sandbox:/mnt/data/{p}" for p in written)
        parts.append(f"[files saved, link them in your answer as {listing}]")
    if skipped:
        parts.append(
            f"[not exported (too large or too many): {', '.join('/mnt/data/' + p for p in skipped)}]"
        )
    for note in notes:
        parts.append(f"[{note}]")
    if not parts:
        return "[the code ran without output]"
    return "\n\n".join(parts)
