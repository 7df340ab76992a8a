#!/usr/bin/env bash
# Set up if needed, then run spd-bench (no arguments: the CPU default run on the built-in organism).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
if [ "$#" -eq 0 ]; then set -- run; fi
exec .venv/bin/spd-bench "$@"
