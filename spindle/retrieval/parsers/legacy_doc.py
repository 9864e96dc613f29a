"""Legacy Word (.doc, Word 97-2003 and older) via Debian's ``antiword``, then ``catdoc``.

Both are small C programs (``apt-get install antiword catdoc``); antiword is the more exact
for Word 97+, catdoc also reads Word 6/95 and odd files antiword rejects. They run as
subprocesses with a time limit, on a temporary copy of the bytes (antiword needs a path).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from spindle.retrieval.errors import IngestError, invalid

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _limit_cpu(seconds: int) -> Callable[[], None]:
    def apply() -> None:
        # A CPU limit the kernel enforces: the converter stops even if the parser process that
        # waits for it is killed first (it would otherwise run on as an orphan).
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))

    return apply


def _run(argv: list[str], timeout_s: float) -> tuple[int, str, str]:
    for attempt in range(3):
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False,
                                  preexec_fn=_limit_cpu(int(timeout_s) + 1))
            break
        except OSError as exc:
            # Spawning can fail transiently under memory pressure (EFAULT/EAGAIN seen on busy
            # hosts); that is never the file's fault, so retry, then report a server error.
            if attempt == 2:
                raise IngestError("server_error", f"Could not run {argv[0]}: {exc}") from None
            time.sleep(0.2 * (attempt + 1))
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def doc_to_text(data: bytes, timeout_s: float = 120.0) -> str:
    if not data.startswith(_OLE_MAGIC):
        raise invalid("The file is not a Word 97-2003 document (no OLE header).")
    antiword = shutil.which("antiword")
    catdoc = shutil.which("catdoc")
    if antiword is None and catdoc is None:
        raise IngestError("server_error", "No .doc converter installed (apt-get install antiword catdoc).")
    fd, path = tempfile.mkstemp(suffix=".doc")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        reasons: list[str] = []
        try:
            if antiword is not None:
                code, out, err = _run([antiword, "-m", "UTF-8.txt", "-w", "0", path], timeout_s)
                if code == 0 and out.strip():
                    return out
                reasons.append(err.strip() or f"antiword exit {code}")
                if "encrypt" in err.lower():
                    raise invalid("The .doc file is encrypted (password-protected).")
            if catdoc is not None:
                code, out, err = _run([catdoc, "-d", "utf-8", "-w", path], timeout_s)
                if code == 0 and out.strip():
                    return out
                reasons.append(err.strip() or f"catdoc exit {code}")
        except subprocess.TimeoutExpired:
            raise invalid(f"Converting the .doc file took longer than {timeout_s:.0f} s.") from None
        raise invalid("The .doc file could not be read: " + "; ".join(r for r in reasons if r)[:300])
    finally:
        os.unlink(path)
