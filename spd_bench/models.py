"""Load a causal LM and its tokenizer from a hub id, a local folder or a built-in name.

The model key that every cache stage depends on is derived from content (weights' hash for a
folder, commit hash for a hub snapshot), so a changed checkpoint never reuses stale artifacts.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spd_bench.builtin_models import BUILTIN_MODELS
from spd_bench.errors import UserError
from spd_bench.store import MANIFEST
from spd_bench.tokenization import load_tokenizer

@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    key: str  # content-derived identity used in cache keys
    source: str  # "built-in" | "local" | "hub"
    path: Path
    device: str
    dtype: str


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``auto`` picks cuda + bfloat16 when a GPU is present, else cpu + float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype {dtype!r} is not supported; use auto, float32, bfloat16 or float16")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu")
    return device, dtype


def _build_progress(spec: str) -> Callable[[str], None]:
    """Progress of a built-in model's first build (minutes for some; stderr, so tables stay clean)."""
    import sys

    def say(message: str) -> None:
        print(f"building {spec} (once per cache): {message}", file=sys.stderr, flush=True)
    return say


def _model_files(path: Path) -> list[Path]:
    return [f for f in sorted(path.rglob("*")) if f.is_file() and not f.name.startswith(".") 
            and f.name not in ("provenance.json", MANIFEST)]


def _hash_folder(path: Path) -> str:
    """sha256 over config, tokenizer and weight files (names and content), read once per process.

    A 14B checkpoint takes minutes to hash: planning, the store's keys and the backend all
    need the identity, so it is remembered, keyed by every file's name, size and mtime.
    """
    stamp = tuple((str(f), *_size_and_mtime(f)) for f in _model_files(path))
    return _hash_files(path, stamp)


def _size_and_mtime(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _hash_files(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in stamp:
        file = Path(name)
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def resolve_model_path(spec: str, cache_dir: Path) -> tuple[Path, str, str]:
    """Return (folder, source, identity) for a built-in name, local folder or hub id."""
    if spec in BUILTIN_MODELS:
        path = BUILTIN_MODELS.get(spec).folder(cache_dir, _build_progress(spec))
        return path, "built-in", f"{spec}@{_hash_folder(path)}"
    local = local_model_folder(spec)
    if local is not None:
        return local, "local", f"local:{local.name}@{_hash_folder(local)}"
    return _hub_snapshot(spec)


def local_model_folder(spec: str) -> Path | None:
    """The folder ``spec`` names (absolute), None when it names no path; a folder must hold config.json."""
    local = Path(spec).expanduser()
    if not (local.exists() or spec.startswith((".", "/", "~"))):
        return None
    if not (local / "config.json").is_file():
        raise UserError(f"model folder {spec!r} has no config.json; pass a folder saved with save_pretrained or a hub id")
    return local.resolve()


# The files that describe a model without its weights.
DESCRIPTION_FILES = ["config.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json"]
# Weights, config, tokenizer (including chat_template.jinja, where recent transformers writes
# chat templates) and remote code: everything loading needs, nothing else.
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py", "*.jinja"]


def _not_available(repo_id: str, reason: str) -> UserError:
    return UserError(
        f"model {repo_id} is not available ({reason}); pass --model (a local folder or a cached hub id), or run"
        f" `spd-bench prefetch --model {repo_id}` on a machine with network"
    )


def hub_description(repo_id: str) -> Path:
    """A folder with the hub model's config and tokenizer files: the cached snapshot, else a small download.

    Fails at once, with what to do, when the model is neither cached nor reachable.
    """
    from huggingface_hub import snapshot_download

    from spd_bench.hub import hub_reachable, offline_mode

    try:
        return Path(snapshot_download(repo_id, allow_patterns=DESCRIPTION_FILES, local_files_only=True))
    except Exception:  # not in the local hub cache: try the hub below
        pass
    if offline_mode():
        raise _not_available(repo_id, "not in the hub cache, and HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise _not_available(repo_id, "not in the hub cache, and the hub cannot be reached")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=DESCRIPTION_FILES))
    except Exception as exc:  # the hub client raises many kinds; all mean "not reachable/known"
        raise _not_available(repo_id, f"the hub answered {type(exc).__name__}: check the name") from exc


def download_model(repo_id: str) -> Path:
    """Bring a hub model's snapshot into the hub cache (for ``spd-bench prefetch --model``)."""
    return _hub_snapshot(repo_id)[0]


def _hub_snapshot(repo_id: str) -> tuple[Path, str, str]:
    """Download (or find in the local hub cache) a model snapshot and name it by its commit."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=SNAPSHOT_PATTERNS))
    except Exception as exc:  # the hub client raises many kinds; all mean "not reachable/known"
        raise UserError(
            f"cannot load model {repo_id!r}: not a local folder, a built-in ({', '.join(BUILTIN_MODELS.names())}), or a"
            f" reachable hub model ({type(exc).__name__}); check the name or pass a local folder"
        ) from exc
    return folder, "hub", f"{repo_id}@{folder.name}"


def load_model(spec: str, cache_dir: Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    device, dtype = resolve_device_dtype(device, dtype)
    path, source, key = resolve_model_path(spec, Path(cache_dir))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model from {path}: {str(exc).splitlines()[0]}; check the folder or hub id") from exc
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, key=key, source=source, path=path, device=device, dtype=dtype)
