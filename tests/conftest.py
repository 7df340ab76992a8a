"""Shared test set-up: offline hub, quiet tokenizers, one cache of tiny models per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
ARITH_PLUGIN = TESTS / "fixtures" / "arith_plugin.py"
sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder where tiny-llama / tiny-qwen2 are built once for the whole session."""
    return tmp_path_factory.mktemp("model-cache")


def spd_bench_cmd(*args: str) -> list[str]:
    """The installed console script, run as a separate process like a user would."""
    return [str(Path(sys.executable).parent / "spd-bench"), *args]
