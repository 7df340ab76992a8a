"""Content-addressed artifact store for stage outputs.

A stage's key hashes its own config, its inputs' keys and a stage version, so a re-run
recomputes only what changed and never silently reuses a stale result. Each artifact is a
folder built under a temporary name and renamed into place, with a manifest saying what
produced it; a crash leaves at most an ignored temporary folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spd_bench.config import stable_hash
from spd_bench.errors import UserError


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old content or the new, never a half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable(folder: Path, what: str, flag: str) -> None:
    """Create ``folder`` and prove it takes files, or fail with the flag that picks another."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable ({exc.strerror or exc}); pass {flag} DIR") from exc


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class StageKey:
    stage: str
    key: str
    inputs: dict[str, Any]


def stage_key(stage: str, version: int, config: Any, inputs: dict[str, str] | None = None) -> StageKey:
    """Key = hash(stage name, stage version, own config, input keys)."""
    payload = {"stage": stage, "version": version, "config": config, "inputs": inputs or {}}
    return StageKey(stage=stage, key=stable_hash(payload, length=20), inputs=payload)


class ArtifactStore:
    """Folders under ``root/<stage>/<key>/`` holding a stage's files and ``manifest.json``."""

    def __init__(self, root: Path, use_cache: bool = True, force: set[str] | None = None) -> None:
        self.root = Path(root)
        self.use_cache = use_cache
        self.force = force or set()
        ensure_writable(self.root, "cache folder", "--cache-dir")
        self._recomputed: set[str] = set()

    def path(self, key: StageKey) -> Path:
        return self.root / key.stage / key.key

    def has(self, key: StageKey) -> bool:
        return (self.path(key) / "manifest.json").exists()

    def reusable(self, key: StageKey) -> bool:
        """Cached and allowed to be reused in this run (not --no-cache, not forced)."""
        if not self.use_cache or key.stage in self.force:
            return key.key in self._recomputed and self.has(key)
        return self.has(key)

    def get_or_build(self, key: StageKey, build: Callable[[Path], dict[str, Any] | None]) -> tuple[Path, bool]:
        """Return (artifact folder, was_cached); ``build(tmp_dir)`` fills a fresh folder otherwise."""
        final = self.path(key)
        if self.reusable(key):
            return final, True
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key.key}.tmp-"))
        try:
            started = time.time()
            info = build(tmp) or {}
            manifest = {
                "stage": key.stage,
                "key": key.key,
                "inputs": key.inputs,
                "info": info,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.time() - started, 3),
            }
            atomic_write_json(tmp / "manifest.json", manifest)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._recomputed.add(key.key)
        return final, False

    def manifest(self, key: StageKey) -> dict[str, Any]:
        return json.loads((self.path(key) / "manifest.json").read_text())
