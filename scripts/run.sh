#!/usr/bin/env bash
# Set up if needed, then run spd-bench (no arguments: the CPU default run on the built-in organism).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
# The default run scores synthetic code tasks by executing generated code, sandboxed.
if [ "$#" -eq 0 ]; then set -- run --allow-code-execution; fi
exec .venv/bin/spd-bench "$@"
