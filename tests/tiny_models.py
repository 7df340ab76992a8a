"""Tiny random decoders built from a config (2 layers, hidden 64, 4 heads, 2 KV heads, vocab 100)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from spd_bench.tiny import decoder_config

VOCAB = 100
KV_WIDTH = 32  # 2 KV heads x head_dim 16


def tiny_model(layout: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, layers: int = 2):
    """A seeded random model in eval mode; Qwen2 gets non-zero k/v biases so folding must handle them."""
    config = decoder_config(layout, VOCAB, layers=layers, max_positions=128, special_ids=(1, 2, 0), tie_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.5)
            elif "norm" not in name:
                param.normal_(0.0, 0.2)  # larger than the default init so logits vary with the input
    return model.eval()


def random_ids(length: int, seed: int, batch: int | None = None) -> torch.Tensor:
    """Token ids in 3..VOCAB-1 (never BOS/EOS/pad)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (length,) if batch is None else (batch, length)
    return torch.randint(3, VOCAB, shape, generator=generator)
