"""What planning needs to know about a model before loading it: depth, K/V widths, module names
and whether its tokenizer has a chat template.

Read from the model's config and tokenizer files (for a hub model: the cached snapshot, or only
those small files downloaded) and a weightless copy of the model on PyTorch's meta device, so a
bad setting fails at plan time in seconds, for a 14B model as for the organism.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_bench.builtin_models import BUILTIN_MODELS
from spd_bench.errors import UserError

@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_layers: int  # decoder layers with separate k_proj/v_proj (0 when the layout is not supported)
    kv_widths: tuple[int, int]  # output features of k_proj and v_proj (0, 0 when not supported)
    linear_modules: frozenset[str]  # leaf names of the nn.Linear modules (LoRA target candidates)
    chat_template: bool
    kv_error: str | None = None  # why K/V could not be located (SPD will refuse the model)
    config: Any = field(default=None, compare=False, repr=False)  # the transformers config (engines check it)


def has_chat_template(folder: Path) -> bool:
    """A template in tokenizer_config.json or in the files recent transformers writes it to."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, UnicodeDecodeError):
        return False


def description_folder(spec: str, cache_dir: Path) -> Path | None:
    """A folder with the model's config and tokenizer files; None for a built-in model not built yet.

    For a hub id this is the cached snapshot or, when the hub is reachable, a download of the
    description files only; when neither works the run stops here, before any other work.
    """
    from spd_bench.models import hub_description, local_model_folder

    if spec in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS.get(spec)
        return builtin.built(cache_dir) if builtin.config is not None else builtin.folder(cache_dir, None)
    local = local_model_folder(spec)
    if local is not None:
        return local
    return hub_description(spec)


def _config(spec: str, folder: Path | None) -> Any:
    from transformers import AutoConfig

    if folder is None:  # a built-in model before its first build: its shape is fixed by its recipe
        config = BUILTIN_MODELS.get(spec).config
        assert config is not None
        return config()
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read the config of model {spec!r} in {folder}: {str(exc).splitlines()[0]}") from exc


def model_info(spec: str, cache_dir: Path) -> ModelInfo:
    """Describe ``spec`` from its files and a meta-device model; no weights are read."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from spd_bench.spd.kv_layout import kv_modules

    folder = description_folder(spec, Path(cache_dir))
    config = _config(spec, folder)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise UserError(f"model {spec!r} is not a causal language model transformers can build: {exc}") from exc
    linear = frozenset(name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear))
    try:
        layers = kv_modules(model)
        widths = (layers[0].k_proj.out_features, layers[0].v_proj.out_features)
        n_layers, kv_error = len(layers), None
    except UserError as exc:
        widths, n_layers, kv_error = (0, 0), 0, str(exc)
    return ModelInfo(
        name=spec, n_layers=n_layers, kv_widths=widths,
        linear_modules=linear, chat_template=folder is not None and has_chat_template(folder), kv_error=kv_error,
        config=config,
    )
