"""Load a saved tokenizer the way every stage needs it: a leaf module, so the code that builds
models and the code that resolves them can both use it without importing each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_tokenizer(path: Path) -> Any:
    """A tokenizer saved as a plain fast tokenizer loads as one (AutoTokenizer may swap classes);
    padding on the left (generation) with EOS standing in for a missing pad token."""
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
