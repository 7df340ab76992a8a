"""Helpers shared by several test files: the arith plugin task, in-process runs on it, records and file ages."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from conftest import ARITH_PLUGIN
from spd_bench.config import make_config, parse_set
from spd_bench.engine.pipeline import Pipeline, Reporter
from spd_bench.engine.plan import make_plan
from spd_bench.registry import TASKS, load_plugin
from spd_bench.results import record_files
from spd_bench.store import ArtifactStore


def ensure_arith_plugin() -> None:
    """Register the arith plugin task once per process (a second load would register it twice)."""
    if "arith" not in TASKS.names():
        load_plugin(str(ARITH_PLUGIN))


def records(out: Path) -> dict[str, dict]:
    """Each record under ``out``: its metrics, its per-item outputs and its stage keys, by relative path."""
    result = {}
    for path in record_files(out / "records"):  # records only, not the library files kept beside them
        data = json.loads(path.read_text())
        samples = (path.parent / data["samples_file"]).read_text()
        result[str(path.relative_to(out))] = {"metrics": data["metrics"], "samples": samples, "keys": data["provenance"]["stage_keys"]}
    return result


def run_arith(root: Path, cache: Path, model: str, methods: tuple[str, ...], settings: tuple[str, ...],
              reporter: Reporter | None = None, **store_options: Any) -> tuple[dict[str, dict], list[str]]:
    """Seed 1 on arith in this process into ``root/results``: (each record's metrics, outputs, keys and budget; the store's notices)."""
    ensure_arith_plugin()
    notices: list[str] = []
    flags = {"model": model, "methods": list(methods), "tasks": ["arith"], "seeds": [1],
             "output_dir": str(root / "results"), "cache_dir": str(cache)}
    config = make_config(parse_set(list(settings)), flags)
    Pipeline(config, make_plan(config), ArtifactStore(cache, notice=notices.append, **store_options), reporter).run()
    found = records(root / "results")
    for name, entry in found.items():
        entry["budget"] = json.loads((root / "results" / name).read_text())["method_info"]["budget"]
    return found, notices


def backdate(path: Path) -> None:
    """Make ``path`` an hour old: older than this process, as a killed run's leftovers are."""
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
