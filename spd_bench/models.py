"""Load a causal LM and its tokenizer from a hub id, a local folder or a built-in name.

The model key that every cache stage depends on is derived from content (weights' hash for a
folder, commit hash for a hub snapshot), so a changed checkpoint never reuses stale artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError

BUILTIN_MODELS = {
    "organism": "the built-in small model trained on the synthetic suite (built on first use)",
    "tiny-llama": "a tiny random Llama-layout model with a locally trained tokenizer (for tests)",
    "tiny-qwen2": "a tiny random Qwen2-layout model (biased k/v) with a locally trained tokenizer",
}


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


def _organism_progress(message: str) -> None:
    """The first build takes minutes: say what it is doing (stderr, so tables stay clean)."""
    import sys

    print(f"building the organism (once per cache): {message}", file=sys.stderr, flush=True)


def _hash_folder(path: Path) -> str:
    """sha256 over config, tokenizer and weight files (names and content)."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file() and not file.name.startswith(".") and file.name != "provenance.json":
            digest.update(str(file.relative_to(path)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def resolve_model_path(spec: str, cache_dir: Path) -> tuple[Path, str, str]:
    """Return (folder, source, identity) for a built-in name, local folder or hub id."""
    if spec == "organism":
        from spd_bench.organism.build import organism_dir

        path = organism_dir(cache_dir, progress=_organism_progress)
        return path, "built-in", f"organism@{_hash_folder(path)}"
    if spec in ("tiny-llama", "tiny-qwen2"):
        from spd_bench.tiny import tiny_model_dir

        path = tiny_model_dir(cache_dir, spec.split("-", 1)[1])
        return path, "built-in", f"{spec}@{_hash_folder(path)}"
    local = Path(spec).expanduser()
    if local.exists() or spec.startswith((".", "/", "~")):
        if not (local / "config.json").is_file():
            raise UserError(f"model folder {spec!r} has no config.json; pass a folder saved with save_pretrained or a hub id")
        return local, "local", f"local:{local.name}@{_hash_folder(local)}"
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> tuple[Path, str, str]:
    """Download (or find in the local hub cache) a model snapshot and name it by its commit."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"],
            )
        )
    except Exception as exc:  # the hub client raises many kinds; all mean "not reachable/known"
        raise UserError(
            f"cannot load model {repo_id!r}: not a local folder, a built-in ({', '.join(BUILTIN_MODELS)}), or a"
            f" reachable hub model ({type(exc).__name__}); check the name or pass a local folder"
        ) from exc
    return folder, "hub", f"{repo_id}@{folder.name}"


def load_tokenizer(path: Path) -> Any:
    """A tokenizer saved as a plain fast tokenizer loads as one (AutoTokenizer may swap classes)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = path / "tokenizer_config.json"
    tokenizer_class = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    if tokenizer_class in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


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
