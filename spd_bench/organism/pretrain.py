"""Pretrain the organism: a ~1M-parameter Llama on a mixture of the suite's three formats.

Everything is fixed by the seed and the step count (not by wall-clock time): the document
stream, the packing, the initial weights and the thread count, so the same config rebuilds
the same model on the same machine kind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from spd_bench.organism.suite import pretraining_documents


@dataclass(frozen=True)
class ModelShape:
    """Llama layout; 4 x 128 with grouped KV heads and tied embeddings is about 1M parameters."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 512
    max_positions: int = 512


@dataclass(frozen=True)
class PretrainConfig:
    """Chosen by measurement: 1,000 annealed steps put every in-domain task at 40-60% (docs/organism.md)."""

    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    warmup: int = 100
    final_lr_fraction: float = 0.1  # cosine decays to this fraction of lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    p_wrong: float = 0.25  # share of deliberately wrong pretraining solutions
    # Document shares: code is learned fastest, so it gets fewer documents (docs/organism.md).
    mix: dict[str, float] = field(default_factory=lambda: {"math": 1.5, "code": 0.7, "mc": 1.5})
    log_every: int = 25
    threads: int = 2


def make_model(shape: ModelShape, tokenizer: Any, seed: int) -> Any:
    """A freshly initialised LlamaForCausalLM sized for ``tokenizer``."""
    import torch
    from transformers import LlamaForCausalLM

    config = model_config(shape, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def model_config(shape: ModelShape, vocab_size: int, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None) -> Any:
    """The organism's LlamaConfig (also what planning reads before the first build)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.mlp,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )


def packed_rows(tokenizer: Any, cfg: PretrainConfig, seed: int) -> Iterator[list[int]]:
    """Rows of ``seq_len`` tokens holding whole documents (BOS prompt answer EOS), right-padded.

    A document never straddles two rows, so every row starts with a document at position 0,
    exactly as a prompt does at inference.
    """
    from spd_bench.spans import encode_example

    row: list[int] = []
    for prompt, answer in pretraining_documents(seed, cfg.p_wrong, cfg.mix):
        ids = encode_example(tokenizer, prompt, answer).input_ids[: cfg.seq_len]
        if len(row) + len(ids) > cfg.seq_len:
            yield row + [tokenizer.pad_token_id] * (cfg.seq_len - len(row))
            row = []
        row.extend(ids)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.final_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(
    model: Any,
    tokenizer: Any,
    cfg: PretrainConfig,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``cfg.steps`` steps; return the loss curve (mean per log window)."""
    import torch

    torch.manual_seed(seed)
    model.train()
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    rows = packed_rows(tokenizer, cfg, seed)
    pad = tokenizer.pad_token_id
    curve: list[dict[str, float]] = []
    window: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.steps):
        batch = torch.tensor([next(rows) for _ in range(cfg.batch_size)])
        labels = batch.masked_fill(batch == pad, -100)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            point = {"step": step + 1, "loss": sum(window) / len(window), "seconds": time.perf_counter() - started}
            curve.append(point)
            window = []
            if progress is not None:
                progress(f"pretraining step {step + 1}/{cfg.steps}: loss {point['loss']:.3f}")
    model.eval()
    return curve
