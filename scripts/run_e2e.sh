#!/usr/bin/env bash
# Run the end-to-end tier (tests/e2e) under each SDK venv in turn: openai 3.52.0, 1.40.8 and
# 1.20.0; then the Azure AI Foundry Agents tier (tests/e2e_agents) once under .venv-agents
# (azure-ai-agents 1.1.x), and the OpenAI Agents SDK tier (tests/e2e/test_responses_agents.py)
# under .venv-oagents (openai-agents). Creates the venvs first if needed. Extra arguments go to pytest
# unchanged, e.g.
#   scripts/run_e2e.sh -k streaming -x
# Every SDK runs even if an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

"$repo_root/scripts/make_sdk_venvs.sh" || { echo "run_e2e: could not create the SDK venvs" >&2; exit 1; }

# The servers run under the main venv; the SDK venvs only hold the client side.
export SPINDLE_PYTHON="${SPINDLE_PYTHON:-$repo_root/.venv/bin/python}"
if [ ! -x "$SPINDLE_PYTHON" ]; then
  echo "run_e2e: $SPINDLE_PYTHON not found (set SPINDLE_PYTHON to the python that has spindle's dependencies)" >&2
  exit 1
fi

# 5 = no tests collected: fine when a -k/-m filter selects nothing under some SDK, a failure otherwise.
filtered=0
for arg in "$@"; do
  case "$arg" in -k|-m|-k*|-m*|--deselect*) filtered=1 ;; esac
done

failed=()
for venv in .venv-sdk3 .venv-sdk140 .venv-sdk120; do
  version="$("$venv/bin/python" -c 'import openai; print(openai.__version__)')"
  echo "=== tests/e2e with openai $version ($venv)"
  "$venv/bin/python" -m pytest tests/e2e -p no:cacheprovider "$@"
  status=$?
  if [ "$status" -ne 0 ] && ! { [ "$status" -eq 5 ] && [ "$filtered" -eq 1 ]; }; then
    failed+=("openai $version (exit $status)")
  fi
done

version="$(.venv-agents/bin/python -c 'from importlib.metadata import version; print(version("azure-ai-agents"))')"
echo "=== tests/e2e_agents with azure-ai-agents $version (.venv-agents)"
.venv-agents/bin/python -m pytest tests/e2e_agents -p no:cacheprovider "$@"
status=$?
if [ "$status" -ne 0 ] && ! { [ "$status" -eq 5 ] && [ "$filtered" -eq 1 ]; }; then
  failed+=("azure-ai-agents $version (exit $status)")
fi

version="$(.venv-oagents/bin/python -c 'from importlib.metadata import version; print(version("openai-agents"))')"
echo "=== tests/e2e/test_responses_agents.py with openai-agents $version (.venv-oagents)"
.venv-oagents/bin/python -m pytest tests/e2e/test_responses_agents.py -p no:cacheprovider "$@"
status=$?
if [ "$status" -ne 0 ] && ! { [ "$status" -eq 5 ] && [ "$filtered" -eq 1 ]; }; then
  failed+=("openai-agents $version (exit $status)")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== e2e FAILED under: ${failed[*]}" >&2
  exit 1
fi
echo "=== e2e passed under all SDKs"
