"""Tiny random models with a locally trained tokenizer: fast stand-ins for tests and smoke runs.

They know nothing, so their scores are near zero; they exercise every code path (Llama layout,
and Qwen2 with biased k/v projections) in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spd_bench.builtin_models import BuiltinModel

TINY_VERSION = 2  # 2: head_dim 32 (2 heads, 1 KV head), the smallest vLLM's CPU attention takes
_CORPUS = [
    "Q: Ann has 12 apples. She buys 7 more. How many apples? A: 12 + 7 = 19. #### 19",
    "def f(x):\n    return abs(max(x, 2)) - 8\n",
    "Question: What is 7 + 19?\nA. 31\nB. 26\nC. 25\nD. 28\nAnswer: B",
    "The quick brown fox jumps over the lazy dog 0123456789 ()[]{}:;,.+-*/=<>#\"'_",
]


def train_tiny_tokenizer(folder: Path, vocab_size: int = 200) -> None:
    """Byte-level BPE with single-digit tokens, saved so from_pretrained can load it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)


LAYOUTS = ("llama", "qwen2", "mistral")


def decoder_config(
    layout: str,
    vocab_size: int,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    max_positions: int = 512,
    special_ids: tuple[int | None, int | None, int | None] = (None, None, None),
    tie_embeddings: bool = True,
) -> Any:
    """A small decoder's transformers config (Llama, Qwen2 with biased k/v, or Mistral layout):
    the one builder behind the tiny built-in models, the tests' models and the benchmarks'."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
    if layout not in classes:
        raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    bos, eos, pad = special_ids
    return classes[layout](
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=tie_embeddings,
    )


def build_tiny_model(folder: Path, layout: str, seed: int = 0) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from spd_bench.tokenization import load_tokenizer

    train_tiny_tokenizer(folder)
    tokenizer = load_tokenizer(folder)
    config = decoder_config(  # same widths as the default shape, but head_dim 32 so vLLM's CPU build serves it
        layout, len(tokenizer), heads=2, kv_heads=1,
        special_ids=(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id),
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)


def _folder(cache_dir: Path, layout: str) -> Path:
    return Path(cache_dir) / "models" / f"tiny-{layout}-v{TINY_VERSION}"


def _built(cache_dir: Path, layout: str) -> Path | None:
    folder = _folder(cache_dir, layout)
    return folder if (folder / "config.json").exists() else None


def tiny_model_dir(cache_dir: Path, layout: str) -> Path:
    """Build once per cache (atomically), then reuse after checking its files against its manifest."""
    from spd_bench.store import publish_verified_folder

    return publish_verified_folder(_folder(cache_dir, layout), lambda folder: build_tiny_model(folder, layout),
                                   what=f"model tiny-{layout}")


def _tiny(layout: str) -> BuiltinModel:
    return BuiltinModel(folder=lambda cache_dir, progress: tiny_model_dir(cache_dir, layout),
                        built=lambda cache_dir: _built(cache_dir, layout),
                        description=f"a random 2-layer {layout} model with a tiny tokenizer, for tests (knows nothing)")


TINY_LLAMA = _tiny("llama")  # Llama layout, for tests
TINY_QWEN2 = _tiny("qwen2")  # Qwen2 layout with biased k/v
