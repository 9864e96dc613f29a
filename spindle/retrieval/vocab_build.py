"""Build the offline o200k_base vocabulary file from the npm package ``js-tiktoken``.

tiktoken fetches ``o200k_base.tiktoken`` from a blob store the first time it is used, which
cannot work on an offline server. ``js-tiktoken`` ships the same merge ranks inside its
tarball (``dist/ranks/o200k_base.js``: a JSON object whose ``bpe_ranks`` holds lines of
``<prefix> <first-rank> <b64 token> <b64 token> ...``). This module rewrites them into the
exact file tiktoken publishes (``<b64 token> <rank>`` per line, rank order) and checks its
SHA-256 against the digest tiktoken itself pins, so a successful build proves the ranks are
OpenAI's. It runs once at setup (``scripts/setup_retrieval.sh``), never at serving time.

Usage: ``python -m spindle.retrieval.vocab_build js-tiktoken-X.tgz OUT_DIR``
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

# The digest tiktoken pins for o200k_base.tiktoken (tiktoken_ext/openai_public.py).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
RANKS_MEMBER = "package/dist/ranks/o200k_base.js"


def _ranks_object(tgz_path: Path) -> dict[str, object]:
    with tarfile.open(tgz_path, "r:gz") as tar:
        member = tar.extractfile(RANKS_MEMBER)
        if member is None:
            raise ValueError(f"{tgz_path} has no {RANKS_MEMBER}")
        source = member.read().decode("utf-8")
    # The module is `export default {...};` - everything between the first `{` and the last `}`.
    body = source[source.index("{") : source.rindex("}") + 1]
    obj: dict[str, object] = json.loads(body)
    return obj


def convert(tgz_path: Path, out_dir: Path) -> Path:
    """Write ``o200k_base.tiktoken`` and ``o200k_base.json`` (pattern, special tokens) to
    ``out_dir``; return the path of the ranks file. Raises ``ValueError`` on a digest mismatch."""
    obj = _ranks_object(tgz_path)
    ranks: list[tuple[int, str]] = []
    for line in str(obj["bpe_ranks"]).split("\n"):
        if not line:
            continue
        _prefix, offset, *tokens = line.split(" ")
        first = int(offset)
        ranks.extend((first + i, token) for i, token in enumerate(tokens))
    ranks.sort()
    payload = "".join(f"{token} {rank}\n" for rank, token in ranks).encode("ascii")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != O200K_SHA256:
        raise ValueError(f"converted ranks do not match o200k_base (sha256 {digest})")
    out_dir.mkdir(parents=True, exist_ok=True)
    ranks_path = out_dir / "o200k_base.tiktoken"
    tmp = ranks_path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    tmp.replace(ranks_path)
    meta = {"pat_str": obj["pat_str"], "special_tokens": obj["special_tokens"], "sha256": digest}
    (out_dir / "o200k_base.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return ranks_path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = convert(Path(argv[0]), Path(argv[1]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
