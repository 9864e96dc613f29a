"""Keyword commits under a stream of small files: spaced ``COMMIT_GAP_S`` apart, each carrying
every file queued meanwhile; a file added alone is committed at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from spindle.retrieval.index import keyword
from spindle.retrieval.index.keyword import COMMIT_GAP_S, KeywordIndex


def test_a_stream_of_files_shares_few_commits(tmp_path: Path) -> None:
    index = KeywordIndex(tmp_path / "kw")
    files = 60
    start = threading.Barrier(files)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            start.wait()
            time.sleep(i * 0.02)  # one file every 20 ms, each waiting for its own commit
            ticket = index.add(f"file-{i}", [i], [f"paragraph number {i} about the ferry timetable"])
            index.commit(ticket)
        except BaseException as exc:  # reported below, with the count
            errors.append(exc)

    began = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(files)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - began
    assert not errors
    assert index.num_docs() == files
    assert [cid for cid, _ in index.search("ferry timetable", files)] and len(index.search("ferry", files)) == files
    # Without the gap every commit would carry the one or two files that arrived during the
    # previous one (on a fast disk: one commit per file).
    assert index.commits <= elapsed / COMMIT_GAP_S + 3, (index.commits, elapsed)
    assert index.commits < files / 4
    index.close()


def test_a_file_after_a_quiet_spell_is_not_delayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = KeywordIndex(tmp_path / "kw")
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(keyword.time, "sleep", lambda s: slept.append(s) or real_sleep(s))
    for i in range(3):
        real_sleep(COMMIT_GAP_S)  # quiet: more than the gap since the last commit
        index.commit(index.add(f"file-{i}", [i], [f"note {i}"]))
        assert index.num_docs() == i + 1  # searchable when commit returns
    index.commit(index.add("x", [9], ["right after"]))  # two commits in a row are not yet a stream
    assert slept == [] and index.commits == 4
    # A third one right after is: it waits the gap out (files arriving one by one, fast).
    index.commit(index.add("y", [10], ["rapid"]))
    assert slept and all(0 < s <= COMMIT_GAP_S for s in slept)
    slept.clear()
    real_sleep(COMMIT_GAP_S)
    # Two changes in one commit mark a stream too: the next commit right after waits.
    index.add("a", [11], ["alpha"])
    index.commit(index.add("b", [12], ["beta"]))
    assert slept == []
    index.commit(index.add("c", [13], ["gamma"]))
    assert slept and all(0 < s <= COMMIT_GAP_S for s in slept)
    assert index.num_docs() == 8
    index.close()
