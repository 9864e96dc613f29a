"""Pure functions of the tool: streamed-argument decoding, link annotations, output rendering,
and the host-side file helpers that must never follow a link planted by sandboxed code."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from spindle.sandbox import ErrorOutput, TextOutput, hostfs
from spindle.tools.code_interpreter.arguments import BadArguments, parse_code, partial_code
from spindle.tools.code_interpreter.links import annotate, pending_marker
from spindle.tools.code_interpreter.recorder import CallRecorder
from spindle.tools.code_interpreter.render import model_output, output_text, strip_ansi

CODE = 'print("a\\\\b")\n\tname = "\u00e9\U0001f600\\u0041"\n# quote: \\" end'


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_partial_code_only_grows_and_ends_exact(ensure_ascii: bool) -> None:
    arguments = json.dumps({"code": CODE}, ensure_ascii=ensure_ascii)
    previous = ""
    for end in range(len(arguments) + 1):
        text = partial_code(arguments[:end])
        if text is None:
            assert previous == ""
            continue
        assert text.startswith(previous), (arguments[:end], previous, text)
        previous = text
    assert previous == CODE


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        ('{"code": "a\\', "a"),  # a lone backslash waits for its escape
        ('{"code": "a\\u00', "a"),  # half a \\u escape waits
        ('{"code": "a\\u00e9', "a\u00e9"),
        ('{"code": "x\\ud83d', "x"),  # half a surrogate pair waits
        ('{"code": "x\\ud83d\\ude00', "x\U0001f600"),
        ('{"code": "a\\\\', "a\\"),  # an escaped backslash is complete
        ('{ "code" :  "b', "b"),
        ('{"co', None),
        ("import os", "import os"),  # raw code instead of JSON
    ],
)
def test_partial_code_cases(chunk: str, expected: str | None) -> None:
    assert partial_code(chunk) == expected


def test_parse_code() -> None:
    assert parse_code(json.dumps({"code": CODE})) == CODE
    assert parse_code('{"code": "a\nb"}') == "a\nb"  # raw newline inside the string
    assert parse_code("x = 1") == "x = 1"
    with pytest.raises(BadArguments):
        parse_code('{"code": 1}')
    with pytest.raises(BadArguments):
        parse_code('{"code": "x')


def test_annotations() -> None:
    files = {"plot.png": "file-1", "data/out put.csv": "file-2", "plot.png.bak": "file-3"}
    text = (
        "See ![p](sandbox:/mnt/data/plot.png), [csv](sandbox:/mnt/data/data/out%20put.csv), "
        "sandbox:/mnt/data/plot.png.bak and [gone](sandbox:/mnt/data/missing.txt)."
    )
    found = annotate(text, files)
    assert [(a["text"], a["file_path"]["file_id"]) for a in found] == [
        ("sandbox:/mnt/data/plot.png", "file-1"),
        ("sandbox:/mnt/data/data/out%20put.csv", "file-2"),
        ("sandbox:/mnt/data/plot.png.bak", "file-3"),
    ]
    for a in found:
        assert text[a["start_index"] : a["end_index"]] == a["text"]
    assert annotate("no links", files) == []


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("Here: [f](sandbox:/mnt/data/f.c", len("Here: [f](")),
        ("Here: [f](sandbox:/mnt/data/f.csv)", None),
        ("Here: [f](sandb", len("Here: [f](")),
        ("Here: [f](s", len("Here: [f](")),
        ("the cats", None),
        ("see s", 4),
        ("Here: sandbox:", len("Here: ")),
        ("", None),
    ],
)
def test_pending_marker(text: str, marker: int | None) -> None:
    assert pending_marker(text) == marker


def test_rendering() -> None:
    colored = "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"
    assert strip_ansi(colored) == "ZeroDivisionError: division by zero"
    error = ErrorOutput("ZeroDivisionError", "division by zero", ["\x1b[1mTraceback\x1b[0m", colored])
    assert output_text(error) == "Traceback\nZeroDivisionError: division by zero\n"
    assert output_text(TextOutput("result", "42")) == "42\n"
    assert (
        model_output("", images=0, written=[], skipped=[], notes=[], max_chars=20000)
        == "[the code ran without output]"
    )
    out = model_output("hi\n", images=2, written=["x.csv"], skipped=[], notes=["slow"], max_chars=20000)
    assert (
        out
        == "hi\n\n[2 images displayed to the user]\n\n[files saved, link them in your answer as sandbox:/mnt/data/x.csv]\n\n[slow]"
    )


def test_recorder_keeps_head_and_tail_only() -> None:
    sent: list[dict[str, Any]] = []

    async def sink(delta: dict[str, Any]) -> None:
        sent.append(delta)

    recorder = CallRecorder(None, "call_1", sink, max_chars=100, max_images=0, quota=None)  # type: ignore[arg-type]

    async def feed() -> None:
        for i in range(1000):
            await recorder.add_text(f"{i:03d}\n")  # 4 characters each

    asyncio.run(feed())
    logs = recorder.logs
    assert logs.startswith("000\n001\n") and logs.endswith("998\n999\n")
    assert "[... 3900 characters truncated ...]" in logs
    streamed = "".join(d["code_interpreter"]["outputs"][0]["logs"] for d in sent)
    assert streamed == logs[:60] and recorder.step_outputs()[0]["logs"] == logs


def test_hostfs_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    box = tmp_path / "box"
    box.mkdir()
    os.symlink(outside / "secret", box / "link.txt")
    os.symlink(outside, box / "dirlink")
    os.mkfifo(box / "fifo")
    (box / "sub").mkdir()
    (box / "sub" / "real.txt").write_text("ok")
    assert set(hostfs.snapshot(str(box))) == {"sub/real.txt"}
    assert hostfs.read_file(str(box), "sub/real.txt", 10) == b"ok"
    for path in ("link.txt", "dirlink/secret", "fifo", "../outside/secret"):
        with pytest.raises((OSError, ValueError)):
            hostfs.read_file(str(box), path, 100)
    with pytest.raises(ValueError):
        hostfs.read_file(str(box), "sub/real.txt", 1)  # over the size bound
    assert hostfs.write_new_file(str(box), "link.txt", b"new", os.getuid()) == "link_1.txt"
    assert (outside / "secret").read_text() == "host secret"
    assert hostfs.write_new_file(str(box), "../../evil", b"x", os.getuid()) == "evil"
    assert hostfs.safe_name("..") == "file" and hostfs.safe_name("a/b\\c.txt") == "c.txt"
