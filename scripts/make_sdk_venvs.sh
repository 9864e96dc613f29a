#!/usr/bin/env bash
# Create the SDK-only virtualenvs the end-to-end tier runs under, next to the repo root:
#   .venv-sdk3   openai==3.52.0  (current SDK)
#   .venv-sdk140 openai==1.40.8  (what most existing code pins)
#   .venv-sdk120 openai==1.20.0  (the last SDK speaking the Assistants v1 shape)
#   .venv-agents azure-ai-agents==1.1.0 + azure-core==1.35.0 (Azure AI Foundry Agents clients)
#   .venv-oagents openai-agents==0.24.0 (the OpenAI Agents SDK, on the Responses API)
# Each holds only the SDK, pytest, pytest-timeout, typing_extensions and httpx: the tests
# must drive Spindle the way users do, never import it. Idempotent: a venv that already has
# the right openai version (and pytest) is left alone.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

# dir, openai version, extra requirements
specs=(
  ".venv-sdk3|3.52.0|httpx"
  # openai < 1.55 passes `proxies=` to httpx, which httpx 0.28 removed.
  ".venv-sdk140|1.40.8|httpx<0.28"
  ".venv-sdk120|1.20.0|httpx<0.28"
)

has_version() {
  local venv="$1" version="$2"
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$version" <<'EOF' 2>/dev/null
import sys
import openai, pytest, pytest_timeout, typing_extensions  # noqa: F401  all must import
sys.exit(0 if openai.__version__ == sys.argv[1] else 1)
EOF
}

for spec in "${specs[@]}"; do
  IFS='|' read -r name version extra <<<"$spec"
  venv="$repo_root/$name"
  if has_version "$venv" "$version"; then
    echo "$name: openai $version already installed"
    continue
  fi
  echo "$name: installing openai $version"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openai==$version" pytest pytest-timeout typing_extensions "$extra"
  has_version "$venv" "$version" || { echo "$name: openai $version did not install" >&2; exit 1; }
done

# The Azure AI Foundry Agents tier (tests/e2e_agents): the azure-ai-agents SDK instead of openai.
# pydantic is there only because pyproject's pytest warning filters name one of its warnings
# (pytest refuses a filter whose module it cannot import); the tests never use it.
agents_version="1.1.0"
agents_core="1.35.0"
agents_venv="$repo_root/.venv-agents"
has_agents() {
  [ -x "$agents_venv/bin/python" ] || return 1
  "$agents_venv/bin/python" - "$agents_version" "$agents_core" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import azure.ai.agents, azure.core, httpx, pydantic, pytest, pytest_timeout  # noqa: F401  all must import
sys.exit(0 if (version("azure-ai-agents"), version("azure-core")) == (sys.argv[1], sys.argv[2]) else 1)
EOF
}
if has_agents; then
  echo ".venv-agents: azure-ai-agents $agents_version already installed"
else
  echo ".venv-agents: installing azure-ai-agents $agents_version"
  [ -x "$agents_venv/bin/python" ] || "$python" -m venv "$agents_venv"
  "$agents_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "azure-ai-agents==$agents_version" "azure-core==$agents_core" pytest pytest-timeout httpx pydantic
  has_agents || { echo ".venv-agents: azure-ai-agents $agents_version did not install" >&2; exit 1; }
fi

# The OpenAI Agents SDK tier (tests/e2e/test_responses_agents.py, skipped elsewhere): the
# openai-agents package drives the Responses API (Agent, function tools, CodeInterpreterTool,
# FileSearchTool).
oagents_version="0.24.0"
oagents_venv="$repo_root/.venv-oagents"
has_oagents() {
  [ -x "$oagents_venv/bin/python" ] || return 1
  "$oagents_venv/bin/python" - "$oagents_version" <<'EOF2' 2>/dev/null
import sys
from importlib.metadata import version
import agents, httpx, openai, pytest, pytest_timeout  # noqa: F401  all must import
sys.exit(0 if version("openai-agents") == sys.argv[1] else 1)
EOF2
}
if has_oagents; then
  echo ".venv-oagents: openai-agents $oagents_version already installed"
else
  echo ".venv-oagents: installing openai-agents $oagents_version"
  [ -x "$oagents_venv/bin/python" ] || "$python" -m venv "$oagents_venv"
  "$oagents_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openai-agents==$oagents_version" pytest pytest-timeout httpx
  has_oagents || { echo ".venv-oagents: openai-agents $oagents_version did not install" >&2; exit 1; }
fi
