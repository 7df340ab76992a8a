#!/usr/bin/env bash
# Create the environment in .venv/ (inside the checkout) if it is missing or pyproject.toml changed.
# torch is pinned to 2.13.0 in pyproject.toml, so pip takes the CPU build on machines without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (first time: a few minutes)" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
